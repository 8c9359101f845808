"""The words of the `shapes` world: its vocabulary, how prompts are worded, and how they are read back.

Every word has one meaning that the dataset draws and the scorer checks:

- object colours (`OBJECT_COLOURS`) and background colours (`BACKGROUND_COLOURS`) are fixed RGB
  values chosen far apart, so a pixel's nearest palette colour names it;
- shapes (`SHAPES`): circle, square, triangle;
- sizes (`SIZES`): the object's circumradius as a fraction of the shorter frame side;
- speeds (`SPEEDS`): pixels per frame as a fraction of the shorter frame side.

A prompt describes a `PromptSpec`: a background, groups of identical objects (count, colour,
shape, size) and a speed. `render_prompt` words a spec in one of many ways; `parse_prompt` reads
any of those wordings (and hand-written prompts in the same vocabulary) back to the same spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

# name -> RGB; pairwise distances >= ~80 so nearest-colour classification is unambiguous
OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "white": (240, 240, 240),
    "orange": (250, 140, 20),
    "purple": (140, 60, 200),
    "cyan": (40, 210, 220),
}
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "navy": (20, 30, 100),
    "white": (240, 240, 240),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, float] = {"small": 0.08, "medium": 0.12, "large": 0.17}  # circumradius / min(H, W)
SPEEDS: dict[str, float] = {"slow": 0.008, "fast": 0.035}  # pixels per frame / min(H, W)

# synonyms the parser accepts (the renderer uses some of them for variety)
_SHAPE_WORDS = {
    "circle": "circle", "circles": "circle", "disc": "circle", "discs": "circle", "disk": "circle",
    "disks": "circle", "ball": "circle", "balls": "circle", "dot": "circle", "dots": "circle",
    "square": "square", "squares": "square", "box": "square", "boxes": "square", "block": "square",
    "blocks": "square",
    "triangle": "triangle", "triangles": "triangle",
}
_SIZE_WORDS = {
    "small": "small", "tiny": "small", "little": "small",
    "medium": "medium", "mid-sized": "medium", "medium-sized": "medium",
    "large": "large", "big": "large", "huge": "large",
}
_SPEED_WORDS = {
    "slow": "slow", "slowly": "slow", "drifting": "slow", "gently": "slow", "lazily": "slow",
    "fast": "fast", "quickly": "fast", "rapidly": "fast", "zipping": "fast", "racing": "fast",
    "darting": "fast",
}
_COLOUR_WORDS = {**{c: c for c in OBJECT_COLOURS}, **{c: c for c in BACKGROUND_COLOURS},
                 "grey": "gray", "violet": "purple", "aqua": "cyan", "turquoise": "cyan", "dark-blue": "navy"}
_COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "single": 1, "two": 2, "pair": 2, "three": 3, "four": 4, "five": 5}


@dataclass(frozen=True)
class ObjectGroup:
    """`count` identical objects; `size` None when the prompt does not say."""

    count: int
    colour: str
    shape: str
    size: str | None = None


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt asks for; fields are None when the prompt leaves them open."""

    background: str | None
    groups: tuple[ObjectGroup, ...] = field(default_factory=tuple)
    speed: str | None = None

    @property
    def object_count(self) -> int:
        return sum(g.count for g in self.groups)


class PromptParseError(ValueError):
    """The prompt names no object (colour + shape) in the shapes vocabulary."""


# ---------------------------------------------------------------------------------------------
# wording
# ---------------------------------------------------------------------------------------------

_NUMBER_NAMES = {1: "a", 2: "two", 3: "three", 4: "four", 5: "five"}
_SLOW_VERBS = ("drifting slowly", "moving slowly", "gliding slowly", "floating slowly", "drifting gently")
_FAST_VERBS = ("bouncing quickly", "zipping", "moving fast", "racing", "darting quickly")
_BACKGROUND_PHRASES = ("on a {} background", "across {}", "over a {} backdrop", "against {}", "on {}")


def _object_phrase(group: ObjectGroup) -> str:
    plural = group.count > 1
    shape = group.shape + ("s" if plural else "")
    words = [_NUMBER_NAMES[group.count]]
    if group.size is not None:
        words.append(group.size)
    words += [group.colour, shape]
    if words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"
    return " ".join(words)


def render_prompt(spec: PromptSpec, rng: np.random.Generator) -> str:
    """Word `spec` as a natural prompt; the template is drawn from `rng` (deterministic per rng)."""
    if not spec.groups or spec.background is None or spec.speed is None:
        raise ValueError("render_prompt needs a background, a speed and at least one object group")
    objects = [_object_phrase(g) for g in spec.groups]
    if len(objects) == 1:
        subject = objects[0]
    else:
        subject = ", ".join(objects[:-1]) + " and " + objects[-1]
    verbs = _SLOW_VERBS if spec.speed == "slow" else _FAST_VERBS
    verb = verbs[rng.integers(len(verbs))]
    background = _BACKGROUND_PHRASES[rng.integers(len(_BACKGROUND_PHRASES))].format(spec.background)
    if rng.random() < 0.25:
        return f"{background[0].upper()}{background[1:]}, {subject} {verb}"
    return f"{subject} {verb} {background}"


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------

def parse_prompt(prompt: str) -> PromptSpec:
    """Read a prompt in the shapes vocabulary back into a `PromptSpec`.

    An object is `[count] [size] colour shape`; a colour not followed by a shape is the background;
    the first speed word sets the speed. Raises `PromptParseError` when no object is named.
    """
    tokens = re.findall(r"[a-z]+(?:-[a-z]+)?", prompt.lower())
    groups: list[ObjectGroup] = []
    background: str | None = None
    speed: str | None = None
    count: int | None = None
    size: str | None = None
    for i, tok in enumerate(tokens):
        if tok in _SPEED_WORDS and speed is None:
            speed = _SPEED_WORDS[tok]
        if tok in _COUNT_WORDS:
            count, size = _COUNT_WORDS[tok], None
        elif tok.isdigit():
            count, size = int(tok), None
        elif tok in _SIZE_WORDS:
            size = _SIZE_WORDS[tok]
        elif tok in _COLOUR_WORDS:
            colour = _COLOUR_WORDS[tok]
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            if nxt in _SIZE_WORDS:  # "a red small circle"
                size = _SIZE_WORDS[nxt]
                nxt = tokens[i + 2] if i + 2 < len(tokens) else ""
            if nxt in _SHAPE_WORDS and colour in OBJECT_COLOURS:
                n = count if count is not None else (2 if nxt.endswith("s") else 1)  # "red circles"
                groups.append(ObjectGroup(n, colour, _SHAPE_WORDS[nxt], size))
            elif colour in BACKGROUND_COLOURS and background is None:
                background = colour
            count, size = None, None
    if not groups:
        raise PromptParseError(f"no object (colour + shape) named in prompt {prompt!r}")
    return PromptSpec(background=background, groups=tuple(groups), speed=speed)
