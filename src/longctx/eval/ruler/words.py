"""Key/value generators and word lists for the RULER tasks, without ``wonderwords``.

RULER draws word keys as "adjective-noun" from wonderwords' 912 x 6,782 lists and draws the
common-words task's words from wonderwords' nouns/adjectives/verbs. wonderwords is not a
dependency here, so:

- word keys are "adjective-noun" from the fixed lists below (165 x 226 = 37,290 keys instead
  of about 6.2M), drawn with the sample's seeded RNG;
- the common-words vocabulary is every distinct all-lowercase word of 3-15 letters in the
  haystack text, sorted (13,875 words for RULER's essay file), so it is fixed by the
  haystack and sampled with the sample's seeded RNG.

Numbers (7 digits) and uuids (version-4 layout from 128 random bits) follow RULER exactly.
"""

from __future__ import annotations

import random
import re
import uuid
from functools import lru_cache

ADJECTIVES = tuple(
    """
    able abundant adorable agile alert amber ancient angry anxious arctic autumn awake
    bashful bitter bold bouncy brave breezy bright brisk broad bumpy busy calm careful
    cheerful chilly clever cloudy clumsy colossal cosmic cozy crimson crisp curious curly
    damp dapper daring dazzling deep delicate dense devoted dizzy dusty eager early earnest
    elastic elegant empty endless fancy fearless fierce fluffy fragile frosty fuzzy gentle
    giant gifted glossy golden graceful grand grumpy handsome happy hasty hidden hollow
    honest humble icy idle jolly jovial keen kind lavish lazy little lively lonely loyal
    lucky lunar magnetic majestic mellow merry mighty misty modest muddy narrow neat nimble
    noble noisy odd orange patient peaceful plain playful polite proud purple quick quiet
    rapid rare restless rich rough round rusty salty scarlet secret serene shaggy sharp
    shiny silent silky silver sleepy slender smooth snowy solid sour sparkling spicy steady
    sticky stormy sturdy sunny swift tame tender thirsty tidy tiny tranquil vast velvet
    vivid wandering warm wary wicked wild windy wise witty wooden young zealous
    """.split()
)
NOUNS = tuple(
    """
    acorn anchor antelope apple apron arch arrow attic avenue badger bakery balcony
    ballad bamboo banjo barn basket beacon beaver bell bicycle blanket blossom boat bonnet
    boulder bracelet branch bridge bucket buffalo butter cabin cactus camel canal candle
    canoe canyon captain carpet castle cellar chapel cherry chimney cider circus cliff
    clock cloud clover cobbler comet compass cottage coyote crater cricket crown crystal
    cupboard curtain daisy desert diamond dolphin donkey dragon drum eagle easel elephant
    ember falcon feather fence ferry fiddle fig flute forest fountain fox galaxy garden
    garnet geyser giraffe glacier goblet goose granite grape hammock harbor harp hawk
    hedge helmet heron hill honey horizon island ivory jacket jaguar jar jasmine jewel
    kayak kettle kite koala ladder lagoon lantern lemon library lighthouse lily lizard
    lobster locket lotus magnet mango maple market marsh meadow meteor mirror mitten
    monastery moose mosaic mountain mushroom needle nest nutmeg oasis ocean olive orchard
    otter owl paddle palace panda parrot pebble pelican pepper piano pillow pine planet
    plum pond poppy puffin pumpkin quarry quill rabbit raccoon radish raven reef ribbon
    river robin rocket saddle salmon sapphire satchel scarf scroll shell shovel skylark
    sled sparrow spider spoon squirrel stable statue stone sunflower swan tambourine
    teapot temple thimble thistle thunder tiger timber tortoise tower trumpet tulip tunnel
    turnip umbrella valley velvet violin volcano wagon walnut walrus waterfall whale
    whistle willow window wizard wolf yacht zebra
    """.split()
)

_LOWER_WORD_RE = re.compile(r"\b[a-z]{3,15}\b")


def draw_value(kind: str, rng: random.Random) -> str:
    """One key or value of RULER's kinds: 'words', 'numbers' (7 digits) or 'uuids'."""
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "words":
        return f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(f"unknown needle kind {kind!r}: expected words, numbers or uuids")


@lru_cache(maxsize=4)
def haystack_vocabulary(text: str) -> tuple[str, ...]:
    """Sorted distinct all-lowercase words (3-15 letters) of ``text``: the common-words
    task's word list (cached: one haystack serves many samples)."""
    return tuple(sorted(set(_LOWER_WORD_RE.findall(text))))
