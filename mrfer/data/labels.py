"""Canonical expression classes and every dataset's label map, in one place.

Canonical order is FER2013's: angry, disgust, fear, happy, sad, surprise, neutral.
Contempt (CK+, AffectNet) gets index 7; `extract.contempt` decides whether it is dropped or
kept as an 8th class. A code that is not in a map is never guessed: `lookup` returns None and
the reader records a skip.
"""
from __future__ import annotations

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CONTEMPT = 7
ALL_CLASSES = CLASSES + ("contempt",)
CONTEMPT_MODES = ("drop", "keep")

# Spellings used by datasets' folder names and papers -> canonical name.
ALIASES = {
    "angry": "angry", "anger": "angry", "an": "angry",
    "disgust": "disgust", "disgusted": "disgust", "di": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "fe": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy", "ha": "happy",
    "sad": "sad", "sadness": "sad", "sa": "sad",
    "surprise": "surprise", "surprised": "surprise", "su": "surprise",
    "neutral": "neutral", "ne": "neutral",
    "contempt": "contempt",
}

# dataset code -> canonical name (None for codes that mean "no usable label").
CKPLUS = {0: "neutral", 1: "angry", 2: "contempt", 3: "disgust", 4: "fear", 5: "happy",
          6: "sad", 7: "surprise"}
FER2013 = dict(enumerate(CLASSES))
EXPW = dict(enumerate(CLASSES))
RAFDB = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry", 7: "neutral"}
AFFECTNET = {0: "neutral", 1: "happy", 2: "sad", 3: "surprise", 4: "fear", 5: "disgust",
             6: "angry", 7: "contempt", 8: None, 9: None, 10: None}
AFFWILD2 = {0: "neutral", 1: "angry", 2: "disgust", 3: "fear", 4: "happy", 5: "sad",
            6: "surprise", 7: None, -1: None}
JAFFE = {"AN": "angry", "DI": "disgust", "FE": "fear", "HA": "happy", "NE": "neutral",
         "SA": "sad", "SU": "surprise"}
# FER+ vote columns, in file order (after Usage, Image name).
FERPLUS_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                   "contempt", "unknown", "NF")


def index(name: str) -> int:
    """Canonical index of a class name or alias (case-insensitive); KeyError if unknown."""
    canonical = ALIASES.get(name.strip().lower())
    if canonical is None:
        raise KeyError(f"unknown expression name {name!r}")
    return ALL_CLASSES.index(canonical)


def lookup(table: dict, code) -> int | None:
    """Canonical index for a dataset code, or None if the code is unknown or means 'no label'."""
    name = table.get(code)
    return None if name is None else ALL_CLASSES.index(name)


def class_names(contempt: str = "drop") -> tuple[str, ...]:
    if contempt not in CONTEMPT_MODES:
        raise ValueError(f"contempt must be one of {CONTEMPT_MODES}, got {contempt!r}")
    return ALL_CLASSES if contempt == "keep" else CLASSES
