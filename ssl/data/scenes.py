"""DataModule over the embedded SyntheticScenes (the default, with masks and labels)."""
from __future__ import annotations

from .base import SSLDataModule
from .synthetic import SyntheticScenesDataset


class SyntheticScenes(SSLDataModule):
    """Procedural scenes with one shape per image (the class), exact masks and labels.

    The defaults are tuned so that self-supervision visibly helps within minutes on a
    CPU: muted colours (``saturation``), low-contrast textures, a small rotation range.
    Fully saturated colours, for instance, give every image a hue that MoCo v2's colour
    jitter cannot hide, and instance discrimination then learns hue instead of shape.

    ``background_class_correlation`` is the probability that a train scene's background
    is tied to its class (a spurious cue); val scenes are tied with probability
    ``val_background_class_correlation`` (0 by default: a clean test of the cue). With
    ``num_backgrounds`` = ``num_classes`` every class owns one background, the strongest
    cue; set the val correlation equal to the train one for an in-distribution val split
    on which the Backgrounds-Challenge variants (``sslkit backgrounds``) measure reliance.
    """

    has_masks = True

    def __init__(
        self,
        image_size: int = 32,
        num_classes: int = 10,
        num_train: int = 8000,
        num_val: int = 2000,
        seed: int = 0,
        object_scale: tuple[float, float] = (0.5, 0.8),
        background_contrast: float = 0.15,
        background_class_correlation: float = 0.0,
        val_background_class_correlation: float = 0.0,
        object_colours: int | None = None,
        num_backgrounds: int | None = None,
        rotation_range: float = 30.0,
        saturation: float = 0.3,
        batch_size: int = 256,
        num_workers: int = 0,
        knn_bank_size: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, image_size, knn_bank_size)
        self.num_classes = num_classes
        self.num_train = num_train
        self.num_val = num_val
        self.seed = seed
        self.render = dict(
            image_size=image_size,
            num_classes=num_classes,
            object_scale=tuple(object_scale),
            background_contrast=background_contrast,
            object_colours=object_colours,
            num_backgrounds=num_backgrounds,
            rotation_range=rotation_range,
            saturation=saturation,
        )
        for name, value in (("background_class_correlation", background_class_correlation),
                            ("val_background_class_correlation", val_background_class_correlation)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"data.{name} must be in [0, 1], got {value}")
        self.background_class_correlation = background_class_correlation
        self.val_background_class_correlation = val_background_class_correlation

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = SyntheticScenesDataset(
                "train", self.num_train, self.seed,
                background_class_correlation=self.background_class_correlation, **self.render,
            )
            self.val_set = SyntheticScenesDataset(
                "val", self.num_val, self.seed,
                background_class_correlation=self.val_background_class_correlation, **self.render,
            )
