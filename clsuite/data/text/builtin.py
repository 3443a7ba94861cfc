"""Import the built-in text sources so that they register."""

from clsuite.data.text import (  # noqa: F401
    agnews,
    alpaca_gpt4,
    arc,
    boolq,
    gsm8k,
    hendrycks_math,
    procedural,
    sciq,
    squad,
    wordnet,
)
