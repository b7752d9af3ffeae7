"""The crs demo benchmark: template-generated prompts with a machine-readable spec.

Every prompt belongs to one *category* (an instruction type such as ``list`` or
``arithmetic``) and one *topic* (an everyday subject such as sleep or bicycles). Its
``spec`` records what a good reply has to do: how many list items were asked for, whether
one sentence was asked for, the right number for a sum, the two things to compare, and the
prompt's key terms. The simulated annotator (:mod:`crs.annotator`) grades replies against
that spec.

Replies to evaluation prompts are graded from the prompt *text* alone, so
:func:`infer_spec` recovers the spec from the wording, and the generator is written so that
``infer_spec(p.text) == p.spec`` holds for every prompt it makes (the tests check this).

Everything here is deterministic given the seed; no model or network is needed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crs.data.schema import PromptExample, user_prompt

CATEGORIES: tuple[str, ...] = (
    "explain",
    "list",
    "define",
    "compare",
    "summarize",
    "arithmetic",
    "rewrite_polite",
    "yes_no",
    "advice",
)
"""Instruction types, in the order prompts are generated."""

PROMPTS_PER_CATEGORY = 120
"""How many prompts :func:`build_prompts` keeps per category (9 x 120 = 1080 in all)."""

DEFAULT_SPLIT_SIZES: dict[str, int] = {"eval": 100, "sft": 250, "rm": 550, "rl": 180}
"""Default split sizes; they add up to the 1080 prompts of :func:`build_prompts`.

The reward-model split gets the most prompts because each of its prompts is later turned
into several labelled replies.
"""


@dataclass
class DemoPrompt:
    """One benchmark prompt.

    ``id`` is ``"<category>-<4 digits>"`` (e.g. ``"list-0042"``), ``text`` is what the
    model sees, and ``spec`` is what the annotator checks (see :func:`infer_spec`).
    """

    id: str
    category: str
    topic: str
    text: str
    spec: dict[str, Any] = field(default_factory=dict)

    def to_example(self) -> PromptExample:
        """This prompt as a single-turn :class:`~crs.data.schema.PromptExample`.

        ``meta`` carries the category, topic and spec for per-category reports.
        """
        meta = {"category": self.category, "topic": self.topic, "spec": self.spec}
        return PromptExample(prompt=user_prompt(self.text), id=self.id, meta=meta)


# --------------------------------------------------------------------------------------
# Words and key terms
# --------------------------------------------------------------------------------------

_STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing done down during
    each either else even ever every few for from further get gets got had has have having
    he her here hers him his how however i if in into is it its itself just least less let
    like make makes many may me might more most much must my near need needs no nor not
    now of off often on once only or other our ours out over own per quite rather really
    same she should so some such than that the their theirs them then there these they
    this those through to too under until up upon us very was we well were what when where
    which while who whom whose why will with within without would yet you your yours
    better best good great new way ways thing things lot lots something anything everything
    someone anyone everyone people person day days time times using use used keep keeps
    keeping kept right
    """.split()
)
"""Common English function words; they say nothing about what a reply is about."""

_INSTRUCTION_WORDS = frozenset(
    """
    explain simple words list tips tip give name ideas define briefly brief sentence
    sentences short definition compare difference summarize summary following text rewrite
    politely polite answer yes reason idea piece advice share single wants want
    one two three four five six seven eight nine ten
    """.split()
)
"""Words that belong to the instruction templates rather than to the topic."""

_NUMBER_WORDS: dict[str, int] = {"two": 2, "three": 3, "four": 4, "five": 5}


def tokenize(text: str) -> list[str]:
    """Lower-cased alphabetic words of ``text`` (digits and punctuation dropped)."""
    return re.findall(r"[a-z]+", text.lower())


def stem(word: str) -> str:
    """A crude stem, so that "dogs"/"dog" and "sleeping"/"sleep" count as the same word.

    Plural ``s``, then ``ing``/``ed``, then a final ``e`` are removed; it is only used to
    compare words with each other, never shown to anyone.
    """
    w = word.lower()
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    if len(w) > 5 and w.endswith("ing"):
        w = w[:-3]
    elif len(w) > 4 and w.endswith("ed"):
        w = w[:-2]
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


def key_terms(text: str) -> list[str]:
    """Content words of a prompt: no stopwords, no instruction words, no words under 3 letters.

    Words are kept in order of first appearance, one per stem.
    """
    terms: list[str] = []
    seen: set[str] = set()
    for word in tokenize(text):
        if len(word) < 3 or word in _STOPWORDS or word in _INSTRUCTION_WORDS:
            continue
        s = stem(word)
        if s not in seen:
            seen.add(s)
            terms.append(word)
    return terms


# --------------------------------------------------------------------------------------
# Recovering the spec from prompt text
# --------------------------------------------------------------------------------------

_ARITHMETIC_OPS = {"+": "+", "plus": "+", "-": "-", "minus": "-", "times": "*", "x": "*", "*": "*"}


def _apply(op: str, a: int, b: int) -> int:
    """``a op b`` for the three operators the templates use."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    return a * b


# Word problems: (regex, function from the regex groups to the answer). The regexes mirror
# the templates in _arithmetic_candidates; group names say which number is which.
_WORD_PROBLEMS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"^(?P<name>\w+) has (?P<a>\d+) (?P<item>\w+) and buys (?P<b>\d+) more\. "
            r"How many (?P=item) does (?P=name) have now\?$"
        ),
        "+",
    ),
    (
        re.compile(
            r"^(?P<name>\w+) had (?P<a>\d+) (?P<item>\w+) and gave away (?P<b>\d+)\. "
            r"How many (?P=item) are left\?$"
        ),
        "-",
    ),
    (
        re.compile(
            r"^A box holds (?P<a>\d+) (?P<item>\w+)\. How many (?P=item) are in (?P<b>\d+) boxes\?$"
        ),
        "*",
    ),
    (
        re.compile(
            r"^There are (?P<a>\d+) (?P<item>\w+) in each of (?P<b>\d+) bags\. "
            r"How many (?P=item) are there in total\?$"
        ),
        "*",
    ),
)

_SYMBOLIC_SUM = re.compile(r"^What is (\d+) (\+|plus|-|minus|times|x|\*) (\d+)\?$", re.IGNORECASE)


def _parse_arithmetic(text: str) -> dict[str, Any] | None:
    """``{"answer": n}`` for the arithmetic templates, else None."""
    m = _SYMBOLIC_SUM.match(text)
    if m:
        op = _ARITHMETIC_OPS[m.group(2).lower()]
        return {"answer": _apply(op, int(m.group(1)), int(m.group(3)))}
    for pattern, op in _WORD_PROBLEMS:
        m = pattern.match(text)
        if m:
            return {"answer": _apply(op, int(m.group("a")), int(m.group("b")))}
    return None


def _parse_list(text: str) -> dict[str, Any] | None:
    m = re.match(r"^(?:List|Give|Name) (\d+|two|three|four|five) (?:tips|ways|ideas)\b", text, re.IGNORECASE)
    if not m:
        return None
    n = m.group(1).lower()
    return {"n_items": int(n) if n.isdigit() else _NUMBER_WORDS[n]}


def _parse_define(text: str) -> dict[str, Any] | None:
    m = re.match(r"^Define .+? (briefly|in one sentence)\.$", text)
    if m:
        return {"one_sentence": True} if m.group(1) == "in one sentence" else {}
    if re.match(r"^Give a short definition of .+\.$", text):
        return {}
    return None


def _parse_compare(text: str) -> dict[str, Any] | None:
    m = re.match(r"^Compare (.+?) and (.+)\.$", text) or re.match(
        r"^What is the difference between (.+?) and (.+)\?$", text
    )
    return {"compare": [m.group(1), m.group(2)]} if m else None


def _parse_summarize(text: str) -> dict[str, Any] | None:
    if re.match(r"^Summarize (?:this|the following text) in one sentence: \S", text):
        return {"one_sentence": True}
    return None


def _parse_explain(text: str) -> dict[str, Any] | None:
    return {} if re.match(r"^Explain (?:in simple words )?(?:why|how) \S", text) else None


def _parse_rewrite(text: str) -> dict[str, Any] | None:
    if re.match(r"^(?:Rewrite this more politely|Make this sentence more polite): '.+'$", text):
        return {}
    return None


def _parse_yes_no(text: str) -> dict[str, Any] | None:
    # Searched anywhere (not anchored) so hand-written yes/no questions are recognised too.
    return {"yes_no": True} if re.search(r"\banswer yes or no\b", text, re.IGNORECASE) else None


def _parse_advice(text: str) -> dict[str, Any] | None:
    if re.match(
        r"^(?:Give one piece of advice for someone who wants to|Share one short piece of advice about"
        r"|What is the best single piece of advice for people who want to) \S",
        text,
    ):
        return {}
    return None


# Tried in this order; the first parser that returns a dict names the category. Every
# template starts with its own fixed words, so at most one of them matches a demo prompt.
_PARSERS = (
    ("arithmetic", _parse_arithmetic),
    ("list", _parse_list),
    ("define", _parse_define),
    ("compare", _parse_compare),
    ("summarize", _parse_summarize),
    ("explain", _parse_explain),
    ("rewrite_polite", _parse_rewrite),
    ("yes_no", _parse_yes_no),
    ("advice", _parse_advice),
)


def infer_spec(prompt_text: str) -> dict[str, Any]:
    """Recover a prompt's spec from its wording.

    Always present: ``category`` (one of :data:`CATEGORIES`, or ``"open"`` for text that
    matches no template) and ``key_terms`` (see :func:`key_terms`). Depending on the
    category: ``n_items`` (int, list), ``one_sentence`` (True, define/summarize),
    ``answer`` (int, arithmetic), ``compare`` ([a, b], compare), ``yes_no`` (True).
    For ``"open"`` prompts, "in one sentence" anywhere still sets ``one_sentence``.
    """
    text = " ".join(prompt_text.split())  # tolerate extra spaces and line breaks
    spec: dict[str, Any] = {"category": "open", "key_terms": key_terms(text)}
    for category, parse in _PARSERS:
        extra = parse(text)
        if extra is not None:
            spec["category"] = category
            spec.update(extra)
            return spec
    if re.search(r"\bin one sentence\b", text, re.IGNORECASE):
        spec["one_sentence"] = True
    return spec


# --------------------------------------------------------------------------------------
# Topic material (written for this project)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Topic:
    """Everything the templates need to say about one everyday subject.

    ``term`` is defined, ``gerund`` gets tips ("tips for ..."), ``goal`` completes "how
    to ..." and "wants to ...", ``thing`` is a singular object for the rude sentences,
    ``whys`` complete "Explain why ...", ``pairs`` are compared (no " and " inside),
    ``actions`` complete "Should I ...?", and ``facts`` are sentences for summaries.
    """

    name: str
    term: str
    gerund: str
    goal: str
    thing: str
    whys: tuple[str, str]
    pairs: tuple[tuple[str, str], tuple[str, str]]
    actions: tuple[str, str]
    facts: tuple[str, str, str, str]


_TOPICS: tuple[_Topic, ...] = (
    _Topic(
        "sleep", term="sleep", gerund="sleeping better", goal="sleep better", thing="pillow",
        whys=("people need sleep", "screens at night can keep you awake"),
        pairs=(("a short nap", "a full night of sleep"), ("sleeping on your back", "sleeping on your side")),
        actions=("drink coffee right before bed", "keep the bedroom cool at night"),
        facts=(
            "Most adults need seven to nine hours of sleep each night.",
            "During sleep the body repairs muscles and the brain stores memories.",
            "Bright screens late in the evening can make it harder to fall asleep.",
            "Going to bed at the same time every day helps the body keep a steady rhythm.",
        ),
    ),
    _Topic(
        "cooking", term="simmering", gerund="cooking at home", goal="cook simple meals at home",
        thing="frying pan",
        whys=("cooking at home can be healthier than eating out", "onions make people cry when they are cut"),
        pairs=(("boiling", "steaming"), ("baking", "frying")),
        actions=("wash vegetables before cooking them", "leave cooked rice out overnight"),
        facts=(
            "Cooking at home lets you choose what goes into your food.",
            "Simple meals like soup or pasta need only a few ingredients.",
            "Tasting food while it cooks helps you get the seasoning right.",
            "Cooking with friends or family can make dinner more fun.",
        ),
    ),
    _Topic(
        "gardening", term="compost", gerund="starting a vegetable garden", goal="grow tomatoes",
        thing="watering can",
        whys=("plants need sunlight", "gardeners add compost to the soil"),
        pairs=(
            ("planting seeds", "buying young plants"),
            ("watering in the morning", "watering in the evening"),
        ),
        actions=("water plants in the hot midday sun", "plant flowers that attract bees"),
        facts=(
            "Most vegetables need at least six hours of sunlight a day.",
            "Compost adds food for plants back into the soil.",
            "Watering deeply but less often helps roots grow strong.",
            "Pulling weeds early keeps them from stealing water from your plants.",
        ),
    ),
    _Topic(
        "saving money", term="a budget", gerund="saving money", goal="save money each month",
        thing="wallet",
        whys=("an emergency fund is useful", "small daily purchases add up"),
        pairs=(("a savings account", "a piggy bank"), ("paying with cash", "paying with a card")),
        actions=(
            "make a shopping list before going to the store",
            "buy things you do not need because they are on sale",
        ),
        facts=(
            "A budget shows where your money goes each month.",
            "Putting a little money aside every week adds up over time.",
            "Cooking at home usually costs less than eating at restaurants.",
            "Waiting a day before a big purchase helps avoid buying on impulse.",
        ),
    ),
    _Topic(
        "exercise", term="aerobic exercise", gerund="exercising regularly", goal="exercise more often",
        thing="yoga mat",
        whys=("exercise is good for the heart", "stretching after exercise can help"),
        pairs=(("lifting weights", "jogging"), ("exercising in the morning", "exercising in the evening")),
        actions=("exercise every day without any rest days", "take the stairs instead of the elevator"),
        facts=(
            "Regular exercise makes the heart and lungs stronger.",
            "Even a short daily walk can improve your mood.",
            "Rest days give muscles time to recover.",
            "Finding an activity you enjoy makes it easier to keep exercising.",
        ),
    ),
    _Topic(
        "learning a language", term="fluency", gerund="learning a new language",
        goal="learn a new language", thing="phrase book",
        whys=("daily practice helps when learning a language", "children often pick up languages quickly"),
        pairs=(
            ("learning with an app", "learning with a teacher"),
            ("reading in a new language", "speaking in a new language"),
        ),
        actions=("watch movies in the language you are learning", "study grammar only and never speak"),
        facts=(
            "Practicing a little every day works better than studying once a week.",
            "Speaking with native speakers builds confidence.",
            "Listening to songs and podcasts helps you learn how words sound.",
            "Making mistakes is a normal part of learning a language.",
        ),
    ),
    _Topic(
        "dogs", term="a puppy", gerund="training a dog", goal="train a puppy", thing="dog leash",
        whys=("dogs need daily walks", "dogs wag their tails"),
        pairs=(("dogs", "cats"), ("a puppy", "an older dog")),
        actions=("give a dog chocolate as a treat", "reward a dog when it behaves well"),
        facts=(
            "Dogs need exercise and attention every day.",
            "Short and regular training sessions work best for puppies.",
            "Rewards like treats and praise teach dogs good habits.",
            "Dogs use their noses to learn about the world around them.",
        ),
    ),
    _Topic(
        "rain", term="rain", gerund="staying dry in the rain", goal="prepare for a rainy day",
        thing="umbrella",
        whys=("rain falls from clouds", "the air smells fresh after rain"),
        pairs=(("rain", "snow"), ("a light shower", "a heavy storm")),
        actions=("carry an umbrella when clouds are dark", "stand under a tall tree during a thunderstorm"),
        facts=(
            "Rain forms when tiny water drops in clouds join and become heavy.",
            "Plants and rivers depend on rain for water.",
            "Too much rain at once can cause floods.",
            "Many people enjoy the calm sound of rain on the roof.",
        ),
    ),
    _Topic(
        "bicycles", term="a bicycle", gerund="riding a bicycle safely", goal="ride a bicycle in the city",
        thing="bike pump",
        whys=("riding a bicycle is good for the environment", "cyclists should wear helmets"),
        pairs=(("riding a bicycle", "driving a car"), ("a mountain bike", "a road bike")),
        actions=("ride a bicycle at night without lights", "check the tire pressure before a long ride"),
        facts=(
            "Bicycles do not burn fuel or pollute the air.",
            "A helmet protects the head in a fall.",
            "Lights and bright clothes help drivers see cyclists at night.",
            "Keeping the chain clean makes a bicycle last longer.",
        ),
    ),
    _Topic(
        "cats", term="a kitten", gerund="caring for a cat", goal="keep a cat happy indoors",
        thing="cat bed",
        whys=("cats purr", "cats like to scratch things"),
        pairs=(("indoor cats", "outdoor cats"), ("a kitten", "an adult cat")),
        actions=("give a cat milk every day", "put a scratching post in the house"),
        facts=(
            "Cats sleep for many hours every day.",
            "A scratching post keeps claws healthy and protects furniture.",
            "Cats enjoy toys that let them chase and pounce.",
            "Fresh water and a clean litter box keep a cat comfortable.",
        ),
    ),
    _Topic(
        "reading", term="a novel", gerund="reading more books", goal="read more books",
        thing="library book",
        whys=("reading to children is helpful", "reading before bed can help you relax"),
        pairs=(("paper books", "e-books"), ("reading fiction", "reading nonfiction")),
        actions=("read for a few minutes every day", "read in very dim light"),
        facts=(
            "Reading builds vocabulary and general knowledge.",
            "Even ten minutes of reading a day adds up to many books a year.",
            "Libraries let people borrow books for free.",
            "Reading stories can help people understand how others feel.",
        ),
    ),
    _Topic(
        "drinking water", term="dehydration", gerund="drinking enough water", goal="drink more water",
        thing="water bottle",
        whys=("the body needs water", "people get thirsty on hot days"),
        pairs=(("tap water", "bottled water"), ("water", "soda")),
        actions=("carry a water bottle during the day", "drink only soda instead of water"),
        facts=(
            "Water helps the body control its temperature.",
            "People lose water when they sweat and breathe.",
            "Feeling tired or having a headache can be a sign of needing water.",
            "Fruits like watermelon and oranges also contain a lot of water.",
        ),
    ),
    _Topic(
        "coffee", term="caffeine", gerund="making good coffee", goal="make a good cup of coffee",
        thing="coffee mug",
        whys=("coffee helps people feel awake", "too much coffee can make people jittery"),
        pairs=(("coffee", "tea"), ("instant coffee", "fresh ground coffee")),
        actions=("drink five cups of coffee a day", "grind coffee beans just before brewing"),
        facts=(
            "Coffee is made from the roasted beans of the coffee plant.",
            "Caffeine in coffee can make people feel more alert.",
            "Drinking coffee late in the day can disturb sleep.",
            "Freshly ground beans usually give coffee a richer taste.",
        ),
    ),
    _Topic(
        "walking", term="a brisk walk", gerund="walking more each day", goal="walk more each day",
        thing="walking stick",
        whys=("walking is good for health", "a walk after lunch helps you feel fresh"),
        pairs=(("walking", "running"), ("walking in a park", "walking on a treadmill")),
        actions=("walk to the shop instead of driving", "wear new shoes for a very long walk"),
        facts=(
            "Walking is free and needs no special equipment.",
            "A daily walk helps the heart and clears the mind.",
            "Comfortable shoes prevent sore feet and blisters.",
            "Walking with a friend makes the time pass quickly.",
        ),
    ),
    _Topic(
        "swimming", term="a lifeguard", gerund="learning to swim", goal="learn to swim", thing="swim cap",
        whys=("swimming works the whole body", "swimmers should not swim alone"),
        pairs=(("swimming in a pool", "swimming in the sea"), ("swimming", "cycling")),
        actions=("swim right after a heavy meal", "take swimming lessons as an adult"),
        facts=(
            "Swimming uses the muscles of the arms, legs and back.",
            "Water supports the body, so swimming is gentle on the joints.",
            "Lessons help beginners learn to breathe and float.",
            "Swimming where a lifeguard is present is safer.",
        ),
    ),
    _Topic(
        "baking bread", term="yeast", gerund="baking bread at home", goal="bake bread at home",
        thing="bread tin",
        whys=("bread dough needs time to rise", "bakers knead dough"),
        pairs=(("white bread", "whole wheat bread"), ("baking bread", "buying bread")),
        actions=("open the oven door often while bread bakes", "let the dough rise in a warm place"),
        facts=(
            "Yeast makes bread dough rise by producing gas.",
            "Kneading the dough makes bread soft and chewy.",
            "Bread needs time to rise before it goes into the oven.",
            "The smell of fresh bread can fill the whole house.",
        ),
    ),
    _Topic(
        "houseplants", term="a houseplant", gerund="keeping houseplants alive",
        goal="keep houseplants healthy", thing="flower pot",
        whys=("houseplants need light", "too much water can harm plants"),
        pairs=(("a cactus", "a fern"), ("plastic pots", "clay pots")),
        actions=("water a cactus every day", "put a plant near a bright window"),
        facts=(
            "Most houseplants need bright light but not harsh direct sun.",
            "Too much water can rot the roots of a plant.",
            "Pots with holes in the bottom let extra water drain away.",
            "Wiping dust off leaves helps plants take in light.",
        ),
    ),
    _Topic(
        "recycling", term="recycling", gerund="recycling at home", goal="recycle more at home",
        thing="recycling bin",
        whys=("recycling helps the planet", "people rinse containers before recycling them"),
        pairs=(("recycling", "composting"), ("glass bottles", "plastic bottles")),
        actions=("put greasy pizza boxes in the paper recycling", "rinse jars before recycling them"),
        facts=(
            "Recycling turns old materials into new products.",
            "Paper, glass and metal can often be recycled many times.",
            "Rinsing containers keeps recycling clean.",
            "Recycling reduces the amount of rubbish sent to landfills.",
        ),
    ),
    _Topic(
        "cleaning the kitchen", term="disinfectant", gerund="keeping the kitchen clean",
        goal="keep a kitchen clean", thing="kitchen towel",
        whys=("wiping counters after cooking is important", "dirty sponges can smell bad"),
        pairs=(("washing dishes by hand", "using a dishwasher"), ("paper towels", "cloth towels")),
        actions=("leave dirty dishes in the sink overnight", "wipe the counters after cooking"),
        facts=(
            "Cleaning as you cook keeps the mess small.",
            "Germs can grow on damp sponges and cloths.",
            "Wiping counters after cooking keeps food safe.",
            "Taking out the trash often stops bad smells.",
        ),
    ),
    _Topic(
        "making friends", term="friendship", gerund="making new friends", goal="make new friends",
        thing="phone",
        whys=("friends are important", "shared hobbies help people become friends"),
        pairs=(("online friends", "friends you meet in person"), ("a close friend", "a classmate")),
        actions=("join a club to meet new people", "talk only about yourself when meeting someone"),
        facts=(
            "Friends give support during hard times.",
            "Joining clubs or classes is a simple way to meet people.",
            "Listening carefully shows others that you care.",
            "Strong friendships grow through time spent together.",
        ),
    ),
    _Topic(
        "public speaking", term="stage fright", gerund="speaking in public", goal="give a good speech",
        thing="microphone",
        whys=("people get nervous before speaking in public", "practice helps before a speech"),
        pairs=(("reading a speech from paper", "speaking from memory"), ("a short talk", "a long lecture")),
        actions=("practice a speech in front of a mirror", "speak very fast to finish quickly"),
        facts=(
            "Many people feel nervous before speaking to a crowd.",
            "Practicing out loud makes a speech feel familiar.",
            "Looking at the audience helps them stay interested.",
            "Speaking slowly and clearly makes the message easy to follow.",
        ),
    ),
    _Topic(
        "studying for exams", term="revision", gerund="studying for exams", goal="prepare for an exam",
        thing="textbook",
        whys=("cramming the night before an exam is a bad plan", "short breaks help while studying"),
        pairs=(("studying alone", "studying in a group"), ("reading notes", "testing yourself")),
        actions=("study all night before an exam", "make a study plan a week ahead"),
        facts=(
            "Studying a little each day works better than cramming.",
            "Testing yourself shows what you still need to learn.",
            "Short breaks help the brain stay focused.",
            "Sleeping well before an exam helps memory.",
        ),
    ),
    _Topic(
        "time management", term="procrastination", gerund="managing your time", goal="manage time better",
        thing="calendar",
        whys=("to-do lists help people get work done", "people put off hard tasks"),
        pairs=(("a paper planner", "a calendar app"), ("doing one task at a time", "multitasking")),
        actions=("write a to-do list each morning", "check your phone every few minutes while working"),
        facts=(
            "A to-do list helps you see what needs to be done.",
            "Doing the hardest task first can make the rest of the day easier.",
            "Breaking big jobs into small steps makes them less scary.",
            "Turning off notifications helps you focus.",
        ),
    ),
    _Topic(
        "camping", term="a campsite", gerund="going camping", goal="plan a camping trip", thing="tent",
        whys=("campers should pack a first aid kit", "a campfire must be put out completely"),
        pairs=(("camping in a tent", "staying in a cabin"), ("summer camping", "winter camping")),
        actions=("leave food outside the tent at night", "check the weather before a camping trip"),
        facts=(
            "Camping lets people spend time close to nature.",
            "A good tent and a warm sleeping bag make nights comfortable.",
            "Campers should always put out their fire completely.",
            "Taking all rubbish home keeps campsites clean for others.",
        ),
    ),
    _Topic(
        "birds", term="migration", gerund="watching birds", goal="attract birds to a garden",
        thing="bird feeder",
        whys=("birds sing in the morning", "some birds fly south for the winter"),
        pairs=(("owls", "eagles"), ("sparrows", "pigeons")),
        actions=("put out a bird feeder in winter", "feed bread to ducks every day"),
        facts=(
            "Many birds sing to mark their territory and find a mate.",
            "Some birds travel thousands of miles when the seasons change.",
            "A feeder and fresh water can bring birds to a garden.",
            "Birds have hollow bones that make them light enough to fly.",
        ),
    ),
    _Topic(
        "the moon", term="the moon", gerund="watching the moon", goal="see the craters on the moon",
        thing="telescope",
        whys=("the moon changes shape in the sky", "the moon causes ocean tides"),
        pairs=(("the moon", "the sun"), ("a full moon", "a new moon")),
        actions=("look at the moon through binoculars", "look straight at the sun to find the moon"),
        facts=(
            "The moon travels around the earth about once a month.",
            "Its shape seems to change because we see different parts lit by the sun.",
            "The pull of the moon helps cause ocean tides.",
            "Astronauts first walked on the moon more than fifty years ago.",
        ),
    ),
    _Topic(
        "snow", term="a snowflake", gerund="staying warm in the snow", goal="stay safe when it snows",
        thing="snow shovel",
        whys=("snow is white", "roads get slippery after snow"),
        pairs=(("snow", "hail"), ("skiing", "sledding")),
        actions=("wear layers of clothes on a snowy day", "drive fast on snowy roads"),
        facts=(
            "Snow forms when water vapor freezes into ice crystals in cold clouds.",
            "No two snowflakes look exactly the same.",
            "Fresh snow can make roads and paths slippery.",
            "Layers of warm clothes help people stay comfortable in the snow.",
        ),
    ),
    _Topic(
        "the ocean", term="a tide", gerund="protecting the ocean", goal="keep beaches clean",
        thing="beach towel",
        whys=("the ocean is salty", "ocean waves form"),
        pairs=(("the ocean", "a lake"), ("high tide", "low tide")),
        actions=("swim far out in rough waves", "pick up plastic you find on the beach"),
        facts=(
            "The ocean covers most of the surface of the earth.",
            "Wind blowing across the water creates waves.",
            "Many animals, from tiny plankton to huge whales, live in the sea.",
            "Plastic waste can harm fish, birds and turtles.",
        ),
    ),
    _Topic(
        "trees", term="a forest", gerund="planting trees", goal="plant a tree", thing="garden shovel",
        whys=("trees are important for clean air", "leaves change color in autumn"),
        pairs=(("oak trees", "pine trees"), ("a forest", "a city park")),
        actions=("plant a tree right next to a house", "water a young tree during dry weeks"),
        facts=(
            "Trees take in carbon dioxide and give out oxygen.",
            "Their roots hold soil in place and prevent erosion.",
            "Shade from trees keeps streets and homes cooler.",
            "Many birds and insects make their homes in trees.",
        ),
    ),
    _Topic(
        "guitar", term="a chord", gerund="learning the guitar", goal="learn to play the guitar",
        thing="guitar",
        whys=("guitar players practice chords", "fingers hurt when you start playing the guitar"),
        pairs=(
            ("an acoustic guitar", "an electric guitar"),
            ("learning from videos", "learning from a teacher"),
        ),
        actions=(
            "practice the guitar for a few minutes every day",
            "play for hours until your fingers bleed",
        ),
        facts=(
            "Learning a few basic chords lets you play many songs.",
            "Short daily practice works better than one long session a week.",
            "Fingertips get sore at first but toughen up with time.",
            "Tuning the guitar before playing makes it sound right.",
        ),
    ),
    _Topic(
        "painting", term="watercolor", gerund="painting as a beginner", goal="start painting",
        thing="paintbrush",
        whys=("artists mix colors", "painting can be relaxing"),
        pairs=(("watercolor", "oil paint"), ("painting", "drawing")),
        actions=("clean your brushes after painting", "throw away a painting because it has one mistake"),
        facts=(
            "Painting lets people express ideas and feelings without words.",
            "Mixing two colors can create a completely new one.",
            "Cleaning brushes after use keeps them soft.",
            "Beginners often start with simple shapes and landscapes.",
        ),
    ),
    _Topic(
        "running", term="a marathon", gerund="starting to run", goal="start running", thing="stopwatch",
        whys=("runners warm up first", "good shoes matter for running"),
        pairs=(("running outside", "running on a treadmill"), ("sprinting", "jogging")),
        actions=("run a marathon without any training", "start with short runs and walk breaks"),
        facts=(
            "Running strengthens the heart and legs.",
            "Beginners should start slowly and build up distance.",
            "Good running shoes help prevent injuries.",
            "Drinking water before and after a run keeps the body hydrated.",
        ),
    ),
    _Topic(
        "breakfast", term="breakfast", gerund="making a healthy breakfast", goal="eat a healthy breakfast",
        thing="cereal bowl",
        whys=("breakfast gives energy for the morning", "oatmeal keeps people full"),
        pairs=(("oatmeal", "cereal"), ("a sweet breakfast", "a savory breakfast")),
        actions=("skip breakfast every day", "add fruit to your breakfast"),
        facts=(
            "Breakfast gives the body energy after a night without food.",
            "Oatmeal, eggs and fruit make a filling start to the day.",
            "Sugary cereals can lead to feeling hungry again soon.",
            "Preparing breakfast the night before saves time in the morning.",
        ),
    ),
    _Topic(
        "fruit", term="a fruit", gerund="eating more fruit", goal="eat more fruit", thing="fruit bowl",
        whys=("fruit is healthy", "bananas turn brown"),
        pairs=(("apples", "oranges"), ("fresh fruit", "fruit juice")),
        actions=("wash fruit before eating it", "eat only fruit for every meal"),
        facts=(
            "Fruit contains vitamins, fiber and water.",
            "Eating different colors of fruit gives the body different nutrients.",
            "Whole fruit keeps you full longer than fruit juice.",
            "Keeping a bowl of fruit on the table makes it an easy snack.",
        ),
    ),
    _Topic(
        "bees", term="pollination", gerund="helping bees", goal="help bees in a garden", thing="honey jar",
        whys=("bees are important for farming", "bees make honey"),
        pairs=(("bees", "wasps"), ("honey bees", "bumblebees")),
        actions=("plant flowers that bees like", "spray a garden with strong chemicals"),
        facts=(
            "Bees carry pollen from flower to flower, which helps plants make fruit.",
            "Honey bees live together in large colonies.",
            "Bees make honey from the nectar of flowers.",
            "Planting flowers without chemical sprays helps bees stay healthy.",
        ),
    ),
    _Topic(
        "trains", term="a railway", gerund="traveling by train", goal="plan a train trip",
        thing="train ticket",
        whys=("trains are good for long trips", "trains run on tracks"),
        pairs=(("traveling by train", "traveling by plane"), ("a fast train", "a slow local train")),
        actions=("book train tickets early to save money", "stand close to the edge of the platform"),
        facts=(
            "Trains can carry many people at once using little fuel per person.",
            "Train stations are often right in the center of cities.",
            "Booking tickets early is usually cheaper.",
            "Passengers can read, work or look at the view during the trip.",
        ),
    ),
    _Topic(
        "keeping a diary", term="a diary", gerund="keeping a diary", goal="start keeping a diary",
        thing="notebook",
        whys=("writing a diary can help people", "people forget the details of their days"),
        pairs=(("a diary", "a blog"), ("writing by hand", "typing on a computer")),
        actions=("write in a diary before going to sleep", "share your private diary with strangers"),
        facts=(
            "A diary is a private place to write about your day.",
            "Writing down feelings can help people understand them.",
            "Reading old entries shows how much a person has changed.",
            "A few lines each day is enough to keep the habit going.",
        ),
    ),
    _Topic(
        "chess", term="checkmate", gerund="getting better at chess", goal="get better at chess",
        thing="chess board",
        whys=("the center of the board matters in chess", "chess players think ahead"),
        pairs=(("chess", "checkers"), ("playing fast games", "playing slow games")),
        actions=("study your own lost games", "move the queen out early in every game"),
        facts=(
            "Chess is a game of strategy for two players.",
            "Each kind of piece moves in its own way.",
            "Controlling the center of the board is a common plan.",
            "Reviewing lost games is a good way to improve.",
        ),
    ),
    _Topic(
        "photography", term="exposure", gerund="taking better photos", goal="take better photos with a phone",
        thing="camera",
        whys=("light matters in photography", "photos can come out blurry"),
        pairs=(("a phone camera", "a big camera"), ("photos taken indoors", "photos taken outdoors")),
        actions=("clean the camera lens before taking photos", "always use the flash in daylight"),
        facts=(
            "Good light makes photos look clear and bright.",
            "Holding the camera steady prevents blurry pictures.",
            "Cleaning the lens removes smudges that spoil photos.",
            "Trying different angles can make an ordinary scene interesting.",
        ),
    ),
    _Topic(
        "brushing teeth", term="plaque", gerund="keeping teeth healthy", goal="keep teeth healthy",
        thing="toothbrush",
        whys=("people should brush their teeth twice a day", "sugar is bad for teeth"),
        pairs=(("an electric toothbrush", "a manual toothbrush"), ("brushing", "flossing")),
        actions=("brush your teeth right after drinking juice", "replace your toothbrush every few months"),
        facts=(
            "Brushing twice a day removes plaque from teeth.",
            "Sugary snacks feed bacteria that cause cavities.",
            "Flossing cleans between teeth where a brush cannot reach.",
            "Regular visits to a dentist catch problems early.",
        ),
    ),
    _Topic(
        "hiking", term="a trail", gerund="hiking in the mountains", goal="prepare for a day hike",
        thing="backpack",
        whys=("hikers carry water", "hikers should stay on the trail"),
        pairs=(("hiking", "climbing"), ("hiking alone", "hiking in a group")),
        actions=("tell someone your route before a hike", "hike in flip-flops on rocky trails"),
        facts=(
            "Hiking is a good way to exercise and enjoy nature.",
            "Sturdy shoes protect the feet on rough trails.",
            "Hikers should carry water, snacks and a map.",
            "Telling someone your route keeps you safer.",
        ),
    ),
    _Topic(
        "relaxing", term="stress", gerund="relaxing after work", goal="relax after a busy day",
        thing="music player",
        whys=("deep breathing helps people calm down", "too much stress is bad for health"),
        pairs=(("meditation", "a warm bath"), ("relaxing at home", "relaxing outdoors")),
        actions=("take a short walk when you feel stressed", "check work emails late at night"),
        facts=(
            "Stress is the reaction of the body to pressure or worry.",
            "Slow deep breaths can calm the body quickly.",
            "Hobbies and time outside help the mind rest.",
            "Talking with a friend can make problems feel smaller.",
        ),
    ),
)

_RUDE_TEMPLATES = (
    "Give me the {thing} now.",
    "Stop touching my {thing}.",
    "Your {thing} is a mess. Fix it.",
    "I need the {thing} back today, so hurry up.",
    "Move your {thing}, it is in my way.",
)

_NAMES = ("Tom", "Sara", "Ali", "Mia", "Ben", "Lena", "Omar", "Nina", "Raj", "Ella")
_ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "stamps", "eggs", "cards", "shells")


# --------------------------------------------------------------------------------------
# Candidate generation, one function per category
# --------------------------------------------------------------------------------------

# A candidate is (topic name, prompt text, spec without key_terms); key terms are added
# afterwards from the final text so every category gets them the same way.
_Candidate = tuple[str, str, dict[str, Any]]


def _explain_candidates() -> list[_Candidate]:
    out: list[_Candidate] = []
    for t in _TOPICS:
        out += [(t.name, f"Explain why {why}.", {}) for why in t.whys]
        out.append((t.name, f"Explain how to {t.goal}.", {}))
        out.append((t.name, f"Explain in simple words how to {t.goal}.", {}))
    return out


def _list_candidates() -> list[_Candidate]:
    words = {n: w for w, n in _NUMBER_WORDS.items()}
    out: list[_Candidate] = []
    for t in _TOPICS:
        for n in range(2, 6):
            spec = {"n_items": n}
            out.append((t.name, f"List {n} tips for {t.gerund}.", spec))
            out.append((t.name, f"List {n} ways to {t.goal}.", spec))
            out.append((t.name, f"Give {words[n]} tips for {t.gerund}.", spec))
    return out


def _define_candidates() -> list[_Candidate]:
    out: list[_Candidate] = []
    for t in _TOPICS:
        out.append((t.name, f"Define {t.term} briefly.", {}))
        out.append((t.name, f"Define {t.term} in one sentence.", {"one_sentence": True}))
        out.append((t.name, f"Give a short definition of {t.term}.", {}))
    return out


def _compare_candidates() -> list[_Candidate]:
    out: list[_Candidate] = []
    for t in _TOPICS:
        for a, b in t.pairs:
            out.append((t.name, f"Compare {a} and {b}.", {"compare": [a, b]}))
            out.append((t.name, f"What is the difference between {a} and {b}?", {"compare": [a, b]}))
    return out


def _summarize_candidates() -> list[_Candidate]:
    out: list[_Candidate] = []
    for t in _TOPICS:
        for left_out in range(4):  # every passage is three of the four facts, in order
            passage = " ".join(f for i, f in enumerate(t.facts) if i != left_out)
            for intro in ("Summarize this in one sentence:", "Summarize the following text in one sentence:"):
                out.append((t.name, f"{intro} {passage}", {"one_sentence": True}))
    return out


def _rewrite_candidates() -> list[_Candidate]:
    out: list[_Candidate] = []
    for t in _TOPICS:
        for template in _RUDE_TEMPLATES:
            rude = template.format(thing=t.thing)
            # Alternate the two wordings so both are well represented.
            intro = "Rewrite this more politely" if len(out) % 2 == 0 else "Make this sentence more polite"
            out.append((t.name, f"{intro}: '{rude}'", {}))
    return out


def _yes_no_candidates() -> list[_Candidate]:
    out: list[_Candidate] = []
    for t in _TOPICS:
        for action in t.actions:
            for question in (f"Is it a good idea to {action}?", f"Should I {action}?"):
                out.append((t.name, f"{question} Answer yes or no and give one reason.", {"yes_no": True}))
    return out


def _advice_candidates() -> list[_Candidate]:
    out: list[_Candidate] = []
    for t in _TOPICS:
        out.append((t.name, f"Give one piece of advice for someone who wants to {t.goal}.", {}))
        out.append((t.name, f"Share one short piece of advice about {t.gerund}.", {}))
        out.append((t.name, f"What is the best single piece of advice for people who want to {t.goal}?", {}))
    return out


def _arithmetic_candidates(rng: np.random.Generator, n: int) -> list[_Candidate]:
    """``n`` distinct random sums and word problems with small numbers."""
    seen: set[str] = set()
    out: list[_Candidate] = []
    while len(out) < n:
        kind = int(rng.integers(0, 9))
        name = str(rng.choice(_NAMES))
        item = str(rng.choice(_ITEMS))
        if kind <= 1:  # addition, symbol or word
            a, b = (int(x) for x in rng.integers(2, 60, size=2))
            op_word = "+" if kind == 0 else "plus"
            text, answer = f"What is {a} {op_word} {b}?", a + b
        elif kind <= 3:  # subtraction with a non-negative result
            a = int(rng.integers(10, 100))
            b = int(rng.integers(1, a))
            op_word = "-" if kind == 2 else "minus"
            text, answer = f"What is {a} {op_word} {b}?", a - b
        elif kind == 4:  # times tables
            a, b = (int(x) for x in rng.integers(2, 13, size=2))
            text, answer = f"What is {a} times {b}?", a * b
        elif kind == 5:
            a, b = (int(x) for x in rng.integers(2, 30, size=2))
            text = f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?"
            answer = a + b
        elif kind == 6:
            a = int(rng.integers(5, 40))
            b = int(rng.integers(1, a))
            text = f"{name} had {a} {item} and gave away {b}. How many {item} are left?"
            answer = a - b
        elif kind == 7:
            a, b = (int(x) for x in rng.integers(2, 13, size=2))
            text, answer = f"A box holds {a} {item}. How many {item} are in {b} boxes?", a * b
        else:
            a, b = (int(x) for x in rng.integers(2, 13, size=2))
            text = f"There are {a} {item} in each of {b} bags. How many {item} are there in total?"
            answer = a * b
        if text not in seen:
            seen.add(text)
            out.append(("arithmetic", text, {"answer": answer}))
    return out


_FIXED_GENERATORS = {
    "explain": _explain_candidates,
    "list": _list_candidates,
    "define": _define_candidates,
    "compare": _compare_candidates,
    "summarize": _summarize_candidates,
    "rewrite_polite": _rewrite_candidates,
    "yes_no": _yes_no_candidates,
    "advice": _advice_candidates,
}


def build_prompts(seed: int = 0, per_category: int = PROMPTS_PER_CATEGORY) -> list[DemoPrompt]:
    """All demo prompts: ``per_category`` of each of :data:`CATEGORIES`, texts all distinct.

    For each category the templates x topics give a pool of candidates, from which
    ``per_category`` are drawn with a generator seeded by ``seed``; arithmetic draws its
    numbers from the same generator. Ids number prompts within a category in draw order
    ("list-0000", "list-0001", ...). Same seed, same list.
    """
    rng = np.random.default_rng(seed)
    prompts: list[DemoPrompt] = []
    for category in CATEGORIES:
        if category == "arithmetic":
            pool = _arithmetic_candidates(rng, per_category)
        else:
            unique = {text: (topic, text, spec) for topic, text, spec in _FIXED_GENERATORS[category]()}
            pool = list(unique.values())
            if len(pool) < per_category:
                raise ValueError(f"only {len(pool)} distinct {category!r} prompts, {per_category} asked for")
            pool = [pool[int(i)] for i in rng.choice(len(pool), size=per_category, replace=False)]
        for i, (topic, text, spec) in enumerate(pool):
            full_spec = {"category": category, "key_terms": key_terms(text), **spec}
            prompts.append(DemoPrompt(f"{category}-{i:04d}", category, topic, text, full_spec))
    return prompts


def assign_splits(
    prompts: Sequence[DemoPrompt],
    sizes: Mapping[str, int] | None = None,
    seed: int = 0,
) -> dict[str, list[DemoPrompt]]:
    """Split prompts into disjoint, category-stratified sets of the given sizes.

    ``sizes`` defaults to :data:`DEFAULT_SPLIT_SIZES` (eval = 100). Prompts are shuffled
    within each category and interleaved so that categories are spread evenly along the
    sequence; consecutive slices then give every split about the category mix of the whole
    (within one or two prompts per category). ``"eval"`` is cut first, so the evaluation
    prompts do not change when the other sizes do. Sizes may add up to less than
    ``len(prompts)``; the rest is left out.
    """
    sizes = dict(DEFAULT_SPLIT_SIZES if sizes is None else sizes)
    if any(int(n) != n or n < 0 for n in sizes.values()):
        raise ValueError(f"split sizes must be non-negative integers, got {sizes}")
    if sum(sizes.values()) > len(prompts):
        raise ValueError(
            f"split sizes add up to {sum(sizes.values())} but there are only {len(prompts)} prompts"
        )
    if len({p.id for p in prompts}) != len(prompts):
        raise ValueError("prompt ids are not unique")

    rng = np.random.default_rng(seed)
    by_category: dict[str, list[DemoPrompt]] = {}
    for p in sorted(prompts, key=lambda p: p.id):  # sorted so input order does not matter
        by_category.setdefault(p.category, []).append(p)

    # Prompt i of a category with n prompts sits at (i + offset) / n along [0, 1); sorting by
    # that position interleaves categories in proportion to their sizes.
    placed: list[tuple[float, int, DemoPrompt]] = []
    for rank, category in enumerate(sorted(by_category)):
        group = by_category[category]
        order = rng.permutation(len(group))
        offset = float(rng.uniform())
        placed += [((i + offset) / len(group), rank, group[int(j)]) for i, j in enumerate(order)]
    sequence = [p for _, _, p in sorted(placed, key=lambda x: (x[0], x[1]))]

    names = (["eval"] if "eval" in sizes else []) + [name for name in sizes if name != "eval"]
    splits: dict[str, list[DemoPrompt]] = {}
    start = 0
    for name in names:
        splits[name] = sequence[start : start + sizes[name]]
        start += sizes[name]
    return {name: splits[name] for name in sizes}  # caller's key order
