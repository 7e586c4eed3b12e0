"""Language models that run some of their blocks several times in one pass.

Inkling 2 loop's decoder runs its blocks ``loop_layer_index_start`` to
``loop_layer_index_end`` (exclusive) ``loop_num_passes`` times per forward
pass: the blocks before the loop, the loop blocks once per pass, then the
blocks after it. HF's own ``hidden_states`` then hold one entry per block
*execution* (the embeddings first, the last entry after the final norm), not
one per block. skvlm's language stage follows them: entry k is the output of
the k-th block execution, so a loop block gives one entry per pass.

:func:`block_executions` lists those executions as hook points that the
capture protocol (:class:`~skvlm.models._base.Stack`) hooks like blocks: a
hook on :class:`Execution` ``(module, n)`` fires on the module's ``n``-th call
of the pass only.
"""

from __future__ import annotations

import threading

__all__ = ["Execution", "block_executions"]

#: The text config's keys of a decoder loop: first loop block, the block after
#: the last one, and how many times the loop runs.
_LOOP_KEYS = ("loop_layer_index_start", "loop_layer_index_end", "loop_num_passes")


class Execution:
    """The ``nth`` call (0-based) of ``module`` in a forward pass, hookable.

    It offers the two hook registrations the capture protocol uses; each
    returned handle removes the hook. Calls are counted per hook, from its
    registration, and only in the registering thread (another thread's pass
    through a shared model neither counts nor fires).

    Examples
    --------
    >>> import torch
    >>> from skvlm.models._loops import Execution
    >>> double = torch.nn.Linear(1, 1)
    >>> seen = []
    >>> handle = Execution(double, 1).register_forward_hook(
    ...     lambda module, args, output: seen.append(args[0].item())
    ... )
    >>> for x in (1.0, 2.0, 3.0):
    ...     _ = double(torch.tensor([x]))
    >>> handle.remove()
    >>> seen
    [2.0]
    """

    def __init__(self, module, nth):
        self.module = module
        self.nth = nth

    def _counted(self, hook):
        owner = threading.get_ident()
        calls = [0]

        def counted(*args, **kwargs):
            if threading.get_ident() != owner:
                return None
            n = calls[0]
            calls[0] += 1
            return hook(*args, **kwargs) if n == self.nth else None

        return counted

    def register_forward_hook(self, hook, **kwargs):
        return self.module.register_forward_hook(self._counted(hook), **kwargs)

    def register_forward_pre_hook(self, hook, **kwargs):
        return self.module.register_forward_pre_hook(self._counted(hook), **kwargs)


def block_executions(blocks, text_config):
    """The language model's block executions in one pass, in order.

    Parameters
    ----------
    blocks : sequence of torch.nn.Module
        The decoder's blocks (``layers``).
    text_config : PretrainedConfig
        Its config: a decoder loop is read off ``loop_layer_index_start``,
        ``loop_layer_index_end`` and ``loop_num_passes``.

    Returns
    -------
    executions : list
        ``blocks`` itself where the decoder has no loop (or runs it once);
        else the blocks in the order they run, a loop block once per pass as
        an :class:`Execution` of that pass.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from skvlm.models._loops import block_executions
    >>> config = SimpleNamespace(
    ...     loop_layer_index_start=1, loop_layer_index_end=2, loop_num_passes=3
    ... )
    >>> runs = block_executions(["a", "b", "c"], config)
    >>> [getattr(run, "nth", run) for run in runs]
    ['a', 0, 1, 2, 'c']
    """
    values = [getattr(text_config, key, None) for key in _LOOP_KEYS]
    if any(value is None for value in values) or values[2] <= 1:
        return blocks
    start, end, passes = (int(v) for v in values)
    blocks = list(blocks)
    loop = [Execution(block, n) for n in range(passes) for block in blocks[start:end]]
    return [*blocks[:start], *loop, *blocks[end:]]
