"""Who the learners are: personas, and each learner's profile drawn before the history (so batch-mates can follow each other)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from langlearn.errors import ContentDataError
from langlearn.seed.content import Content, data_file
from langlearn.seed.simulation.catalogue import COURSES
from langlearn.seed.simulation.clock import at
from langlearn.seed.simulation.rows import Millis, Uuid

if TYPE_CHECKING:
    from langlearn.seed.simulation.context import RunContext

HISTORY_DAYS = 56  # eight weeks
_UUID4_KEEP = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_BITS = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


@dataclass(frozen=True)
class Persona:
    name: str
    share: float
    active: float  # chance of practising on a given day
    lessons: tuple[int, int]
    skill: tuple[float, float]
    reviews: int  # words per daily review
    shopping: float


PERSONAS = (
    Persona("dedicated", 0.15, 0.93, (2, 5), (0.86, 0.96), 20, 0.5),
    Persona("regular", 0.40, 0.70, (1, 3), (0.78, 0.92), 15, 0.35),
    Persona("casual", 0.30, 0.35, (1, 2), (0.70, 0.88), 10, 0.2),
    Persona("churned", 0.15, 0.65, (1, 3), (0.70, 0.90), 12, 0.25),
)
PERSONA_BY_NAME = {p.name: p for p in PERSONAS}


@dataclass
class Profile:
    index: int
    id: Uuid
    rng: random.Random  # the learner's own: their history depends on the seed and their index alone
    persona: Persona
    signup: Millis
    course: str
    native: str
    display_name: str
    username: str
    email: str


def uuid4_value(bits: int) -> Uuid:
    """A version-4 UUID's value made of 128 random bits."""
    return (bits & _UUID4_KEEP) | _UUID4_BITS


def user_uuid(seed: int, index: int) -> Uuid:
    """A user's id, derived from the seed and the user's index alone (other batches' learners never name it, but a
    resumed run must)."""
    return uuid4_value(int.from_bytes(hashlib.blake2b(f"{seed}:user:{index}".encode(), digest_size=16).digest(), "big"))


def check_demo_accounts(content: Content) -> None:
    """Raise ContentDataError for a demo account with a persona or course the simulation does not know."""
    for number, account in enumerate(content.demo["accounts"], start=1):
        where = f"{data_file('demo_accounts.json')}: account {number}"
        if account["persona"] not in PERSONA_BY_NAME:
            raise ContentDataError(f"{where}: field 'persona' is {account['persona']!r}; expected one of {', '.join(PERSONA_BY_NAME)}")
        if account["course"] not in content.courses:
            raise ContentDataError(f"{where}: field 'course' is {account['course']!r}, the key of no course file")


def draw_profile(ctx: RunContext, index: int) -> Profile:
    rng = random.Random(f"{ctx.seed}:history:{index}")
    people = ctx.content.people
    first = ctx.first_day
    uid = user_uuid(ctx.seed, index)
    if index < ctx.demo_accounts:
        account = ctx.content.demo["accounts"][index]
        return Profile(index, uid, rng, PERSONA_BY_NAME[account["persona"]], at(first, 1.0 + index), account["course"], "vi",
                       account["display_name"], account["username"], account["email"])
    roll, persona = rng.random(), PERSONAS[-1]
    for candidate in PERSONAS:
        roll -= candidate.share
        if roll < 0:
            persona = candidate
            break
    # more early adopters than late joiners; everyone joined inside the history window
    offset_days = int(HISTORY_DAYS * rng.random() ** 1.7)
    signup = at(first + offset_days, rng.uniform(0.0, 15.0))
    if rng.random() < 0.06:
        native, names = "en", people["en"]
        family, given = rng.choice(names["family"]), rng.choice(names["given"])
        display, slug = f"{given[0]} {family[0]}", f"{given[1]}.{family[1]}{index}"
        course = "es-a1"
    else:
        native, names = "vi", people["vi"]
        family, given = rng.choice(names["family"]), rng.choice(names["given"])
        display = f"{family[0]} {rng.choice(people['vi']['middle'])} {given[0]}"
        slug = f"{given[1]}.{family[1]}{index}"
        course = rng.choices(COURSES, weights=(0.55, 0.25, 0.20))[0]
    email = f"{slug}@{rng.choice(people['email_domains'])}".lower()
    return Profile(index, uid, rng, persona, signup, course, native, display, slug, email)

