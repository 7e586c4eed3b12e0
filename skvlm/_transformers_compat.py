"""Everything that depends on the installed transformers release, in one place.

skvlm supports **transformers >= 5.24** (the lower bound that ``make
test-oldest`` installs and tests) up to the newest release (``make
test-latest``; the lock file pins the release ``make test`` uses). Other
modules use only public transformers API; a test
(``tests/test_architecture.py``) fails when any module but this one names a
private transformers attribute, imports from a private transformers module, or
overrides a private method of a transformers class.

Each branch below names the release that made it necessary, so that the next
break is quick to diagnose (the contributing guide lists the same facts).

- **5.25** resolves a processor's sub-processors in ``from_pretrained`` itself
  and uses one passed by keyword (``video_processor=obj``) *as given*. Up to
  5.24 every sub-processor was loaded from disk first, so a video processor
  that needs torchvision failed before a keyword could replace it; there a
  processor is built from its parts, each loaded by its public ``Auto`` class,
  then ``from_args_and_dict``. Both paths use only public methods.
- **5.9** moved Qwen2.5-VL's window permutation of vision tokens from the
  tower's ``get_window_index`` method to ``transformers.vision_utils``
  (``get_vision_window_index``); :func:`vision_window_index` asks whichever
  the installed release has.
- **5.x** ships some families' image processors (Llama 4,
  Phi-4-multimodal, ...) with its torchvision backend only; the auto
  mapping ``IMAGE_PROCESSOR_MAPPING_NAMES`` names each type's classes per
  backend (``{"pil": ..., "torchvision": ...}``), and
  :func:`torchvision_only_image_processor` reads it to say so at load time.
- **5.0** dropped torchvision-free fallbacks for video processors: a
  processor that owns one (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM,
  InternVL, LLaVA-OneVision, GLM-4V, ...) refuses anything but a
  ``VideoProcessorMixin`` / ``BaseVideoProcessor`` in its class check. The
  class returned by :func:`processor_class_without_video` overrides that
  public check (``check_argument_for_proper_class``) for the stand-in only.
"""

from __future__ import annotations

import functools

import transformers
from packaging.version import Version

__all__ = [
    "MINIMUM_VERSION",
    "SUBPROCESSOR_KEYWORD",
    "TRANSFORMERS_VERSION",
    "MissingVideoProcessor",
    "load_processor_without_torchvision",
    "load_processor_without_video",
    "pil_image_processor_fails",
    "pixtral_processor_class",
    "processor_class_without_video",
    "torchvision_available",
    "torchvision_only_image_processor",
    "vision_window_index",
]

MINIMUM_VERSION = Version("5.24")
TRANSFORMERS_VERSION = Version(Version(transformers.__version__).base_version)
# 5.25: ProcessorMixin.from_pretrained uses sub-processors passed by keyword as given.
SUBPROCESSOR_KEYWORD = TRANSFORMERS_VERSION >= Version("5.25")


def torchvision_available():
    """Whether transformers will use torchvision (its own public check)."""
    from transformers.utils import is_torchvision_available

    return bool(is_torchvision_available())


def torchvision_only_image_processor(model_type):
    """The image processor class of ``model_type`` if it exists only with torchvision.

    None when the type has a PIL image processor too, or none at all, or when
    the installed transformers does not name its backends.
    """
    try:
        from transformers.models.auto.image_processing_auto import (
            IMAGE_PROCESSOR_MAPPING_NAMES,
        )
    except ImportError:
        return None
    backends = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type)
    if not isinstance(backends, dict):
        return None
    names = {k: v for k, v in backends.items() if v}
    if set(names) == {"torchvision"}:
        return names["torchvision"]
    return None


class MissingVideoProcessor:
    """Stands in for a video processor that needs torchvision.

    Chat templates read ``num_frames`` and ``fps`` even for image-only chats;
    processing a video fails here with what to install.
    """

    num_frames = None
    fps = None
    # ``ProcessorMixin.save_pretrained`` reads this protocol attribute of every
    # sub-processor (custom-code export); the stand-in has no code to export.
    _auto_class = None
    # Ernie 4.5-VL's ``save_pretrained`` copies its video processor's font file
    # when ``os.path.isfile(font)``; the stand-in has none.
    font = ""
    # MiniCPM-V's processors read these of their video processor at init.
    slice_mode = False
    downsample_mode = "16x"

    def __call__(self, *args, **kwargs):
        raise ImportError(
            "Video inputs need torchvision, which is not usable here: "
            "pip install torchvision (skvlm itself only sends images)."
        )

    def __repr__(self):
        return "MissingVideoProcessor()"


@functools.cache
def processor_class_without_video(processor_cls):
    """``processor_cls`` accepting :class:`MissingVideoProcessor` as its video processor.

    The subclass keeps the parent's name and module, so messages and
    ``save_pretrained`` show the real class, and a saved directory loads as
    the real class.
    """

    def check_argument_for_proper_class(self, argument_name, argument):
        if isinstance(argument, MissingVideoProcessor):
            return MissingVideoProcessor
        return processor_cls.check_argument_for_proper_class(
            self, argument_name, argument
        )

    def to_dict(self):
        # The stand-in is no sub-processor: nothing of it belongs in a saved config.
        output = processor_cls.to_dict(self)
        output.pop("video_processor", None)
        return output

    return type(
        processor_cls.__name__,
        (processor_cls,),
        {
            "check_argument_for_proper_class": check_argument_for_proper_class,
            "to_dict": to_dict,
            "__module__": processor_cls.__module__,
            "__doc__": processor_cls.__doc__,
        },
    )


def load_processor_without_video(path, processor_cls, **kwargs):
    """Load ``processor_cls`` from ``path`` with a stand-in for its video processor.

    Parameters
    ----------
    path : str
        Hub id or local directory in ``save_pretrained`` layout.
    processor_cls : type
        The transformers processor class (``transformers.Qwen2VLProcessor``...).
    **kwargs
        Passed to every ``from_pretrained`` (``revision``...).

    Returns
    -------
    processor : processor_cls
        With :class:`MissingVideoProcessor` as ``video_processor``.
    """
    cls = processor_class_without_video(processor_cls)
    if SUBPROCESSOR_KEYWORD:
        processor = cls.from_pretrained(
            path, video_processor=MissingVideoProcessor(), **kwargs
        )
        # 5.25 loads the tokenizer before it takes the video processor out of
        # the keywords, so the tokenizer records it among its init_kwargs, and
        # save_pretrained would then fail to write it to JSON.
        for name in cls.get_attributes():
            init_kwargs = getattr(getattr(processor, name), "init_kwargs", None)
            if isinstance(init_kwargs, dict):
                init_kwargs.pop("video_processor", None)
        return processor
    from transformers import AutoImageProcessor, AutoTokenizer

    processor_dict, init_kwargs = cls.get_processor_dict(path, **kwargs)
    parts = []
    for name in cls.get_attributes():
        if name == "video_processor":
            parts.append(MissingVideoProcessor())
        elif name == "tokenizer":
            parts.append(AutoTokenizer.from_pretrained(path, **kwargs))
        elif name == "image_processor":
            parts.append(AutoImageProcessor.from_pretrained(path, **kwargs))
        else:
            raise NotImplementedError(
                f"{processor_cls.__name__} has a sub-processor {name!r} that skvlm "
                f"cannot load without torchvision on transformers "
                f"{transformers.__version__}; install torchvision, or transformers "
                ">= 5.25."
            )
    return cls.from_args_and_dict(parts, processor_dict, **init_kwargs)


def vision_window_index(tower, grid):
    """Qwen2.5-VL's window permutation of a tower's packed vision tokens.

    Parameters
    ----------
    tower : torch.nn.Module
        The Qwen2.5-VL vision tower (``model.visual``).
    grid : torch.Tensor
        ``image_grid_thw`` of the images, shape (n_images, 3).

    Returns
    -------
    index : torch.Tensor
        The permutation HF applies to the merged tokens before the blocks.
    """
    try:  # 5.9 and later
        from transformers.vision_utils import get_vision_window_index
    except ImportError:  # up to 5.8 the tower computes it itself
        return tower.get_window_index(grid)[0]
    return get_vision_window_index(
        grid,
        spatial_merge_size=tower.spatial_merge_size,
        window_size=tower.window_size,
        patch_size=tower.patch_size,
    )[0]


# -- Pixtral's processor without torchvision ---------------------------------------
# 5.25: ``transformers.models.pixtral.processing_pixtral`` imports the torchvision
# image processor (for a helper of ``_get_num_multimodal_tokens``), so
# ``PixtralProcessor`` (Mistral 3, LLaVA with a Pixtral tower) is a placeholder
# that refuses to build without torchvision, although its PIL image processor
# (``PixtralImageProcessorPil``) needs none. The stand-in below is the same
# processor (the same ``__init__``, the same placeholder expansion: one
# ``[IMG]`` per merged patch, ``[IMG_BREAK]`` after each row, ``[IMG_END]``
# last), written against ``ProcessorMixin``; tests/models/test_pixtral_processor.py
# checks it against the real class in the torchvision world.
PIXTRAL_PROCESSOR = "PixtralProcessor"


@functools.cache
def _pixtral_processor_pil():
    from transformers import ProcessorMixin

    class PixtralProcessor(ProcessorMixin):
        text_kwargs = {"return_tensors": "pt"}
        images_kwargs = {"return_tensors": "pt"}

        def __init__(
            self,
            image_processor=None,
            tokenizer=None,
            patch_size=16,
            spatial_merge_size=1,
            chat_template=None,
            image_token="[IMG]",
            image_break_token="[IMG_BREAK]",
            image_end_token="[IMG_END]",
            **kwargs,
        ):
            super().__init__(image_processor, tokenizer, chat_template=chat_template)
            self.patch_size = patch_size
            self.spatial_merge_size = spatial_merge_size
            self.image_token = image_token
            self.image_break_token = image_break_token
            self.image_end_token = image_end_token
            ids = tokenizer.convert_tokens_to_ids
            self.image_token_id = ids(image_token)
            self.image_break_token_id = ids(image_break_token)
            self.image_end_token_id = ids(image_end_token)

        @property
        def image_token_ids(self):
            return [
                self.image_token_id,
                self.image_break_token_id,
                self.image_end_token_id,
            ]

        def _process_images(self, images, **images_kwargs):
            images_kwargs["patch_size"] = self.patch_size * self.spatial_merge_size
            return super()._process_images(images, **images_kwargs)

        def replace_image_token(self, image_inputs, image_idx, **kwargs):
            patch = self.patch_size * self.spatial_merge_size
            height, width = image_inputs["image_sizes"][image_idx]
            row = [self.image_token] * (int(width) // patch) + [self.image_break_token]
            tokens = row * (int(height) // patch)
            tokens[-1] = self.image_end_token
            return "".join(tokens)

        @property
        def model_input_names(self):
            return (
                self.tokenizer.model_input_names
                + self.image_processor.model_input_names
                + ["image_sizes"]
            )

    PixtralProcessor.__module__ = __name__
    PixtralProcessor.__qualname__ = PIXTRAL_PROCESSOR
    return PixtralProcessor


def pixtral_processor_class():
    """``transformers.PixtralProcessor``, or its torchvision-free stand-in.

    Examples
    --------
    >>> from skvlm._transformers_compat import pixtral_processor_class
    >>> pixtral_processor_class().__name__
    'PixtralProcessor'
    """
    if torchvision_available():
        return transformers.PixtralProcessor
    return _pixtral_processor_pil()


# -- Fuyu's PIL image processor ----------------------------------------------------
# 5.25: ``FuyuProcessor`` asks its image processor for torch tensors and hands
# them to its ``patchify_image``, which ``FuyuImageProcessorPil`` writes for numpy
# arrays (``ndarray.transpose(0, 1, 3, 2, 4)``): without torchvision the
# processor fails on every image. Probed, not versioned, so that a release that
# fixes it just works.
@functools.cache
def pil_image_processor_fails(model_type):
    """Why ``model_type``'s processor fails on every image without torchvision
    (its PIL image processor cannot take what the processor hands it), or None.

    None with torchvision, and for every type but Fuyu's.
    """
    if model_type != "fuyu" or torchvision_available():
        return None
    import torch

    try:
        from transformers import FuyuImageProcessorPil

        FuyuImageProcessorPil().patchify_image(torch.zeros(1, 3, 30, 30))
    except ImportError:
        return None
    except (TypeError, AttributeError):
        return (
            "FuyuImageProcessorPil, whose patchify_image takes numpy arrays, "
            "while FuyuProcessor hands it torch tensors"
        )
    return None


def load_processor_without_torchvision(path, **kwargs):
    """Load a saved processor whose transformers class needs torchvision.

    Only the classes with a torchvision-free stand-in here load
    (``PixtralProcessor``); any other raises ``ImportError`` naming the fix.

    Parameters
    ----------
    path : str
        Hub id or local directory in ``save_pretrained`` layout.
    **kwargs
        Passed to ``from_pretrained`` (``revision``...).

    Returns
    -------
    processor : transformers.ProcessorMixin
    """
    from transformers import ProcessorMixin

    processor_dict, _ = ProcessorMixin.get_processor_dict(path, **kwargs)
    name = processor_dict.get("processor_class")
    if name != PIXTRAL_PROCESSOR:
        raise ImportError(
            f"The processor of {path!r} ({name}) needs torchvision, which is not "
            "usable here: pip install torchvision."
        )
    return _pixtral_processor_pil().from_pretrained(path, **kwargs)


def __getattr__(name):
    # The stand-in is built on first use (it imports ProcessorMixin); found
    # here by name, its instances pickle like any processor.
    if name == PIXTRAL_PROCESSOR:
        return _pixtral_processor_pil()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
