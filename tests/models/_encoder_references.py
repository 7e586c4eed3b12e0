"""The encoder test modules' tiny checkpoints and HF references, by model type."""

from skvlm.testing import random_images


class References:
    """Each type's tiny checkpoint and its HF reference, built once per session.

    ``build(path, model_type)`` writes the checkpoint; ``reference(path,
    model_type, images)`` computes HF's own outputs on ``images``; ``images``
    (a callable of the model type) picks a type's test images, by default four
    random images of mixed sizes.
    """

    def __init__(self, tmp_path_factory, build, reference, images=None):
        self._tmp = tmp_path_factory
        self._build, self._reference = build, reference
        self._refs = {}
        self.images = random_images(4, seed=7)
        self._images = images or (lambda model_type: self.images)

    def __getitem__(self, model_type):
        if model_type not in self._refs:
            path = self._build(self._tmp.mktemp(model_type), model_type)
            self._refs[model_type] = self._reference(
                path, model_type, self._images(model_type)
            )
        return self._refs[model_type]
