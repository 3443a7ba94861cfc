"""Import the built-in sources so that they register."""

from clsuite.data.sources import (  # noqa: F401
    animal_mnist,
    cifar,
    core50,
    fashion_mnist,
    imagenet100,
    imagenet_c,
    imagenet_o,
    medmnist,
    mnist,
    mnist5k,
    tiny_imagenet,
)
