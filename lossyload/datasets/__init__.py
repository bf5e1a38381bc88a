"""Small labelled datasets built offline from data that ships inside installed packages."""

from lossyload.datasets.photos import (
    CLASSES,
    PhotosConfig,
    SamplePlan,
    add_arguments,
    build_photos,
    plan_samples,
    run,
)

__all__ = ["CLASSES", "PhotosConfig", "SamplePlan", "add_arguments", "build_photos", "plan_samples", "run"]
