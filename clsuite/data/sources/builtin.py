"""Import the built-in sources so that they register."""

from clsuite.data.sources import animal_mnist, mnist5k  # noqa: F401
