#!/usr/bin/env python3
"""Generate the built-in prompt set (src/llenergymeasure/datasets/builtin/prompts.jsonl).

Every prompt is composed by this script from templates and word lists written for this
project; nothing is copied from an existing dataset. Passages are assembled from sentence
templates about invented places and people, so they make no factual claims about real ones.
The output is deterministic for a given ``--seed`` (default 2025), and re-running it
reproduces the shipped file byte for byte.

    python scripts/generate_prompts.py [--n 1000] [--seed 2025] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

DEFAULT_OUT = (
    Path(__file__).resolve().parents[1] / "src/llenergymeasure/datasets/builtin/prompts.jsonl"
)

# ---- word lists -------------------------------------------------------------------------
TOPICS: list[dict[str, str]] = [
    {
        "name": "rooftop beekeeping",
        "actor": "beekeepers",
        "thing": "hives",
        "place": "flat roofs",
        "benefit": "pollination of nearby gardens",
        "problem": "heat stress in midsummer",
        "metric": "honey yield",
    },
    {
        "name": "community solar panels",
        "actor": "residents",
        "thing": "panel arrays",
        "place": "school car parks",
        "benefit": "lower electricity bills",
        "problem": "uneven shading in winter",
        "metric": "kilowatt-hours produced",
    },
    {
        "name": "sourdough baking",
        "actor": "home bakers",
        "thing": "starters",
        "place": "small kitchens",
        "benefit": "a longer-lasting loaf",
        "problem": "sluggish fermentation in cold weather",
        "metric": "rise time",
    },
    {
        "name": "river restoration",
        "actor": "volunteers",
        "thing": "gravel beds",
        "place": "the lower valley meadows",
        "benefit": "the return of spawning fish",
        "problem": "silt washed down after storms",
        "metric": "water clarity",
    },
    {
        "name": "night bus networks",
        "actor": "transport planners",
        "thing": "night routes",
        "place": "the outer districts",
        "benefit": "safer journeys home for shift workers",
        "problem": "low ridership after 2 a.m.",
        "metric": "passengers per hour",
    },
    {
        "name": "data-centre cooling",
        "actor": "facility engineers",
        "thing": "cooling loops",
        "place": "the server halls",
        "benefit": "lower energy use per rack",
        "problem": "hot spots near dense GPU racks",
        "metric": "power usage effectiveness",
    },
    {
        "name": "urban tree planting",
        "actor": "park staff",
        "thing": "street trees",
        "place": "narrow residential streets",
        "benefit": "cooler pavements in summer",
        "problem": "roots lifting paving stones",
        "metric": "canopy cover",
    },
    {
        "name": "library lending of tools",
        "actor": "librarians",
        "thing": "tool kits",
        "place": "branch libraries",
        "benefit": "fewer rarely-used purchases",
        "problem": "tools returned damaged",
        "metric": "loans per month",
    },
    {
        "name": "coastal erosion monitoring",
        "actor": "survey teams",
        "thing": "drone surveys",
        "place": "the northern cliffs",
        "benefit": "earlier warnings for homeowners",
        "problem": "fog grounding the drones",
        "metric": "metres of cliff lost",
    },
    {
        "name": "school vegetable gardens",
        "actor": "teachers",
        "thing": "raised beds",
        "place": "primary school yards",
        "benefit": "children trying new vegetables",
        "problem": "watering over the holidays",
        "metric": "kilograms harvested",
    },
    {
        "name": "bicycle repair cafés",
        "actor": "mechanics",
        "thing": "repair stands",
        "place": "church halls",
        "benefit": "bikes kept out of landfill",
        "problem": "a shortage of spare parts",
        "metric": "bikes repaired",
    },
    {
        "name": "heat pump retrofits",
        "actor": "installers",
        "thing": "heat pumps",
        "place": "older terraced houses",
        "benefit": "lower heating emissions",
        "problem": "poorly insulated walls",
        "metric": "seasonal efficiency",
    },
    {
        "name": "language exchange meetups",
        "actor": "organisers",
        "thing": "conversation tables",
        "place": "riverside cafés",
        "benefit": "confidence in speaking",
        "problem": "uneven numbers of speakers",
        "metric": "regular attendees",
    },
    {
        "name": "wetland bird counts",
        "actor": "birdwatchers",
        "thing": "count sheets",
        "place": "the reed marshes",
        "benefit": "a long record of population trends",
        "problem": "double counting of flocks",
        "metric": "species recorded",
    },
    {
        "name": "open-source mapping",
        "actor": "mappers",
        "thing": "map edits",
        "place": "rural villages",
        "benefit": "better routes for emergency services",
        "problem": "outdated satellite imagery",
        "metric": "roads mapped",
    },
    {
        "name": "food bank logistics",
        "actor": "coordinators",
        "thing": "delivery rounds",
        "place": "the eastern estates",
        "benefit": "less food wasted",
        "problem": "volunteer drivers cancelling late",
        "metric": "parcels delivered",
    },
    {
        "name": "museum digitisation",
        "actor": "archivists",
        "thing": "scanned records",
        "place": "basement archives",
        "benefit": "remote access for researchers",
        "problem": "fragile paper tearing during scanning",
        "metric": "pages digitised",
    },
    {
        "name": "small-scale wind turbines",
        "actor": "farmers",
        "thing": "turbines",
        "place": "exposed hilltop fields",
        "benefit": "power for remote barns",
        "problem": "noise complaints from neighbours",
        "metric": "average output",
    },
    {
        "name": "rainwater harvesting",
        "actor": "householders",
        "thing": "storage tanks",
        "place": "back gardens",
        "benefit": "less pressure on mains water",
        "problem": "algae in warm months",
        "metric": "litres collected",
    },
    {
        "name": "amateur astronomy clubs",
        "actor": "members",
        "thing": "telescopes",
        "place": "dark-sky fields",
        "benefit": "public viewing nights",
        "problem": "light pollution from a new depot",
        "metric": "clear nights per year",
    },
    {
        "name": "hospital appointment reminders",
        "actor": "clinic staff",
        "thing": "text reminders",
        "place": "outpatient clinics",
        "benefit": "fewer missed appointments",
        "problem": "outdated phone numbers",
        "metric": "no-show rate",
    },
    {
        "name": "compost collection",
        "actor": "waste crews",
        "thing": "food caddies",
        "place": "flats without gardens",
        "benefit": "less waste sent to landfill",
        "problem": "contamination with plastic bags",
        "metric": "tonnes composted",
    },
    {
        "name": "machine learning model serving",
        "actor": "ML engineers",
        "thing": "inference servers",
        "place": "shared GPU clusters",
        "benefit": "faster responses for users",
        "problem": "idle GPUs drawing power overnight",
        "metric": "tokens per second",
    },
    {
        "name": "village broadband",
        "actor": "co-operative members",
        "thing": "fibre cables",
        "place": "scattered farmhouses",
        "benefit": "reliable video calls",
        "problem": "digging permits along the lanes",
        "metric": "homes connected",
    },
]
TOWNS = [
    "Marrowfield",
    "Eastbrook",
    "Kelling Vale",
    "Ashcombe",
    "Thornbury Cross",
    "Wendle",
    "Port Averly",
    "Caskmoor",
    "Linfield",
    "Oxhaven",
    "Brindle Bay",
    "Hollins End",
]
FIRST = [
    "Amara",
    "Tomasz",
    "Priya",
    "Jonah",
    "Leila",
    "Bruno",
    "Keiko",
    "Samir",
    "Ines",
    "Callum",
    "Yusuf",
    "Freya",
    "Mateo",
    "Anika",
    "Olu",
    "Greta",
    "Rafael",
    "Mei",
    "Dmitri",
    "Niamh",
]
LAST = [
    "Okafor",
    "Lindqvist",
    "Hartley",
    "Moreau",
    "Castellan",
    "Nakamura",
    "Byrne",
    "Alvarez",
    "Petrov",
    "Osei",
    "Whitlock",
    "Fairbairn",
    "Kowalski",
    "Draper",
    "Sato",
    "Mbeki",
]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
LANGUAGES = [
    "French",
    "Spanish",
    "German",
    "Italian",
    "Portuguese",
    "Dutch",
    "Swedish",
    "Polish",
    "Japanese",
    "Turkish",
]
AUDIENCES = [
    "a ten-year-old",
    "a new employee",
    "a retired engineer",
    "a first-year university student",
    "a busy manager",
    "someone who has never used a computer",
    "a journalist",
    "a nurse",
]
PRODUCTS = [
    "kettle",
    "rucksack",
    "desk lamp",
    "pair of running shoes",
    "coffee grinder",
    "e-reader",
    "garden hose",
    "office chair",
    "wireless keyboard",
    "rain jacket",
    "blender",
    "tent",
]
CONCEPTS = [
    "recursion",
    "compound interest",
    "photosynthesis",
    "the greenhouse effect",
    "a hash table",
    "supply and demand",
    "vaccination and herd immunity",
    "how a transistor switches",
    "entropy in everyday life",
    "the difference between weather and climate",
    "how public-key cryptography works",
    "why the sky looks blue",
    "what a database index does",
    "how tides work",
    "inflation",
    "the placebo effect",
    "how a neural network learns",
    "why bread rises",
    "latency versus throughput",
    "how GPS finds your position",
    "what an API is",
    "the water cycle",
    "version control",
    "how vaccines are tested",
    "caching",
    "energy versus power",
]

# ---- passages ---------------------------------------------------------------------------
PASSAGE_SENTENCES = [
    "In {town}, {actor} have spent the last {years} years working on {name}.",
    "The project began when {person} noticed that {place} were going unused for most of the year.",
    "Early results were mixed: {thing} installed in the first season suffered from {problem}.",
    "By the following {month}, the team had changed its approach and reported a {pct} percent improvement in {metric}.",
    "Supporters point to {benefit} as the clearest gain so far.",
    "Critics, including {person}, argue that the money could have been spent on more pressing needs.",
    "A survey of {count} local households found that {pct} percent had heard of the scheme.",
    "{person}, who coordinates the work, says the hardest part is keeping volunteers after the first winter.",
    "The council has promised to review funding in {month}, once a full year of data is available.",
    "Neighbouring {town2} is watching closely and may copy the model if costs stay under control.",
    "Most of the early spending went on {thing}, with smaller sums set aside for training and insurance.",
    "One unexpected lesson was that {problem} mattered more than any technical detail.",
    "Records kept by {actor} show a steady improvement in {metric} since the second year.",
    "A report published in {month} recommended sharing equipment between sites to cut costs.",
    "Not everyone agrees on how success should be measured; some prefer {metric}, others prefer {benefit}.",
    "The next phase will extend the work to {place} on the far side of {town}.",
    "{person} estimates that each site needs about {hours} hours of care a month.",
    "When asked what they would do differently, several {actor} said they would start smaller.",
    "Local businesses have offered {count} pounds in sponsorship, on condition that results are published.",
    "The scheme's organisers admit that the figures are rough and that better records are needed.",
]
CLOSERS = [
    "Whether the approach can last without outside funding remains an open question.",
    "For now, the people of {town} seem willing to give it more time.",
    "The coming year should show whether the early gains hold up.",
]


def _fill(template: str, rng: random.Random, topic: dict[str, str], **fixed: str) -> str:
    """Fill a sentence template's slots from the topic, ``fixed`` and random invented details."""
    towns = rng.sample(TOWNS, 2)
    slots = {
        **topic,
        "town": towns[0],
        "town2": towns[1],
        "person": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        "years": str(rng.randint(2, 9)),
        "month": rng.choice(MONTHS),
        "pct": str(rng.randint(4, 68)),
        "count": str(rng.randrange(120, 4000, 10)),
        "hours": str(rng.randint(3, 40)),
        **fixed,
    }
    text = template.format(**slots)
    return text[0].upper() + text[1:]


def passage(rng: random.Random, topic: dict[str, str], target_chars: int) -> str:
    """A news-style passage about ``topic`` of roughly ``target_chars`` characters."""
    order = [PASSAGE_SENTENCES[0], *rng.sample(PASSAGE_SENTENCES[1:], len(PASSAGE_SENTENCES) - 1)]
    town, town2 = rng.sample(TOWNS, 2)  # one setting per passage
    sentences: list[str] = []
    used_chars = 0
    for template in order:
        sentence = _fill(template, rng, topic, town=town, town2=town2)
        if sentences and used_chars + len(sentence) > target_chars:
            break
        sentences.append(sentence)
        used_chars += len(sentence) + 1
    sentences.append(_fill(rng.choice(CLOSERS), rng, topic, town=town))
    return " ".join(sentences)


def _passage_len(rng: random.Random) -> int:
    """Target passage length: mostly medium, some long (up to ~1500 characters)."""
    return rng.choice([250, 400, 550, 700, 900, 1100, 1300, 1450])


# ---- task builders (each returns a prompt) ------------------------------------------------
def summarise(rng: random.Random) -> str:
    """Summarise a generated passage with a varied instruction."""
    topic = rng.choice(TOPICS)
    text = passage(rng, topic, _passage_len(rng))
    ask = rng.choice(
        [
            "Summarise the following article in {k} sentences.",
            "Write a {k}-bullet summary of this text for a busy reader.",
            "Give a one-paragraph summary of the passage below, then list its {k} main claims.",
            "TL;DR this in under {w} words:",
            "Summarise the key facts below for a council briefing note ({k} bullet points).",
        ]
    ).format(k=rng.randint(2, 5), w=rng.choice([30, 50, 80]))
    return f"{ask}\n\n{text}"


def qa(rng: random.Random) -> str:
    """Open questions, some about a passage (reading comprehension)."""
    topic = rng.choice(TOPICS)
    if rng.random() < 0.45:
        text = passage(rng, topic, _passage_len(rng))
        q = rng.choice(
            [
                "According to the passage, what was the main problem early on?",
                "Who is quoted in the text, and what do they say?",
                "What benefit do supporters mention, and what do critics object to?",
                "What will happen next, according to the passage?",
                "Which measure of success does the text mention?",
            ]
        )
        return f"Read the passage and answer the question.\n\nPassage: {text}\n\nQuestion: {q}"
    return rng.choice(
        [
            "What are the main benefits of {name}?",
            "Why might {actor} struggle with {problem}?",
            "How would you measure the success of {name}?",
            "What is the biggest risk when starting a project on {name}?",
            "Is {name} worth the cost for a small town? Answer in a short paragraph.",
            "What questions should a council ask before funding {name}?",
        ]
    ).format(**topic)


CODE_TASKS = [
    "reverses the words in a sentence but keeps punctuation attached to its word",
    "returns the n-th Fibonacci number using an iterative loop",
    "checks whether a string is a palindrome, ignoring case and spaces",
    "merges two sorted lists into one sorted list without using sort()",
    "counts how often each word appears in a text file and prints the top {k}",
    "parses a CSV file of expenses and returns the total per category",
    "validates an email address with a regular expression and explains the pattern",
    "implements a least-recently-used cache with a fixed capacity of {k} items",
    "computes the moving average of a list of numbers with window size {k}",
    "converts a Roman numeral to an integer",
    "finds all prime numbers below {big} with the sieve of Eratosthenes",
    "flattens an arbitrarily nested list",
    "groups a list of dictionaries by the value of a given key",
    "retries a function up to {k} times with exponential back-off",
    "reads a JSON config file and fills in missing keys with defaults",
    "computes the energy in joules from a list of (timestamp, power in watts) samples using the trapezoidal rule",
    "splits a list into chunks of size {k}",
    "finds the longest common prefix of a list of strings",
    "checks whether parentheses, brackets and braces in a string are balanced",
    "rotates a square matrix by 90 degrees in place",
    "returns the median of a stream of numbers",
    "deduplicates a list while keeping the original order",
    "computes the p50, p90 and p99 latency from a list of request times",
    "renames every file in a folder to lower case",
]
CODE_LANGS = [
    "Python",
    "Python",
    "Python",
    "JavaScript",
    "TypeScript",
    "Go",
    "Rust",
    "Java",
    "C",
    "Bash",
    "SQL-free Python",
]


def code(rng: random.Random) -> str:
    """Code-writing requests with varied languages and constraints."""
    task = rng.choice(CODE_TASKS).format(k=rng.randint(3, 12), big=rng.choice([100, 1000, 10000]))
    lang = rng.choice(CODE_LANGS)
    extra = rng.choice(
        [
            "",
            " Include type hints and a docstring.",
            " Add two unit tests.",
            " Explain the time complexity.",
            " Keep it under 20 lines.",
            " Handle empty input gracefully.",
        ]
    )
    if rng.random() < 0.2:
        buggy = rng.choice(
            [
                "def average(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total / len(xs) + 1",
                "def last_item(items):\n    return items[len(items)]",
                "def is_even(n):\n    return n % 2 == 1",
                "def count_vowels(s):\n    return sum(1 for c in s if c in 'aeiou'.upper())",
            ]
        )
        return (
            f"This function has a bug. Find it, explain it, and fix it:\n\n```python\n{buggy}\n```"
        )
    return f"Write a {lang} function that {task}.{extra}"


def explain(rng: random.Random) -> str:
    """Explanations of concepts for a given audience and style."""
    return rng.choice(
        [
            "Explain {c} to {a}.",
            "Explain {c} to {a} in three short paragraphs.",
            "Can you explain {c} using an everyday analogy?",
            "Explain {c}, then give one common misconception about it.",
            "In plain English, what is {c}? Assume the reader is {a}.",
            "Explain {c} step by step, with a small worked example.",
        ]
    ).format(c=rng.choice(CONCEPTS), a=rng.choice(AUDIENCES))


def translate(rng: random.Random) -> str:
    """Translation requests of generated sentences or short passages."""
    topic = rng.choice(TOPICS)
    text = (
        passage(rng, topic, rng.choice([150, 300, 500]))
        if rng.random() < 0.5
        else _fill(rng.choice(PASSAGE_SENTENCES), rng, topic)
    )
    lang = rng.choice(LANGUAGES)
    ask = rng.choice(
        [
            "Translate the following into {l}:",
            "Please translate this text into {l}, keeping the tone neutral:",
            "Translate into {l} and note any phrase that has no direct equivalent:",
        ]
    ).format(l=lang)
    return f"{ask}\n\n{text}"


REVIEW_OPENERS = [
    "I bought this {p} last month",
    "We have used the {p} daily for a year",
    "This {p} arrived yesterday",
    "I returned the {p} after a week",
    "Got the {p} as a gift",
]
REVIEW_BODIES = [
    "and it has worked flawlessly.",
    "but the build quality is disappointing.",
    "and it does exactly what it says, nothing more.",
    "and honestly it is the best purchase I made this year.",
    "but the instructions were confusing and a part was missing.",
    "and it is fine, though overpriced for what you get.",
    "and it broke within days.",
    "and customer service replaced it quickly when the handle cracked.",
]


def classify(rng: random.Random) -> str:
    """Sentiment, topic and intent classification of generated texts."""
    kind = rng.randrange(3)
    if kind == 0:
        p = rng.choice(PRODUCTS)
        review = f"{rng.choice(REVIEW_OPENERS).format(p=p)} {rng.choice(REVIEW_BODIES)}"
        return f"Classify the sentiment of this review as positive, negative or mixed. Answer with one word.\n\nReview: {review}"
    if kind == 1:
        topic = rng.choice(TOPICS)
        text = _fill(rng.choice(PASSAGE_SENTENCES), rng, topic)
        labels = ", ".join(
            rng.sample(
                [
                    "environment",
                    "transport",
                    "technology",
                    "health",
                    "community",
                    "energy",
                    "food",
                    "education",
                ],
                5,
            )
        )
        return f"Which of these categories best fits the sentence: {labels}?\n\nSentence: {text}"
    msg = rng.choice(
        [
            "Hi, my order #{n} still hasn't arrived, can you check?",
            "How do I change the email address on my account?",
            "I was charged twice for invoice {n}, please refund one.",
            "Do you ship to {t}?",
            "Your app crashes every time I open the settings page.",
        ]
    ).format(n=rng.randint(10000, 99999), t=rng.choice(TOWNS))
    return f"Classify the intent of this customer message as one of: order_status, account, billing, shipping, bug_report.\n\nMessage: {msg}"


def creative(rng: random.Random) -> str:
    """Creative writing: poems, stories, dialogue, slogans."""
    topic = rng.choice(TOPICS)
    return rng.choice(
        [
            "Write a short poem about {name} in {town}.",
            "Write a haiku about {thing} on {place}.",
            "Write a 200-word short story in which {person} discovers {problem}.",
            "Write a limerick about {actor} and their {thing}.",
            "Write the opening paragraph of a mystery novel set in {town}.",
            "Write a dialogue between {person} and a sceptical neighbour about {name}.",
            "Suggest five slogans for a campaign promoting {name}.",
            "Write a letter from the year 2080 describing how {name} changed {town}.",
        ]
    ).format(**topic, town=rng.choice(TOWNS), person=f"{rng.choice(FIRST)} {rng.choice(LAST)}")


def maths(rng: random.Random) -> str:
    """Arithmetic and algebra word problems with random numbers."""
    name = rng.choice(FIRST)
    a, b, c = rng.randint(3, 40), rng.randint(2, 15), rng.randint(2, 9)
    problems = [
        f"A train leaves {rng.choice(TOWNS)} at {rng.randint(6, 11)}:{rng.choice(['00', '15', '30', '45'])} travelling at {a + 40} km/h. How far has it gone after {b} hours and {c * 5} minutes?",
        f"{name} buys {a} notebooks at {b} pounds each and pays with a {rng.choice([100, 200, 500])}-pound note. How much change is due?",
        f"A GPU draws {rng.randint(150, 700)} W for {a} seconds while generating {b * 100} tokens. How many joules per token is that? Show your working.",
        f"A rectangle's length is {c} times its width and its perimeter is {2 * (c + 1) * b} cm. What is its area?",
        f"{name} saves {a} pounds a week. After how many weeks will the savings first exceed {a * b * 10 + c} pounds?",
        f"A recipe for {c} people uses {a * 10} g of flour. How much flour is needed for {c + b} people?",
        f"Solve for x: {c}x + {a} = {c * b + a}. Explain each step.",
        f"A shop reduces a {a * 10}-pound jacket by {rng.choice([10, 15, 20, 25, 30])}% and then by a further {rng.choice([5, 10])}%. What is the final price?",
        f"Two taps fill a tank in {b} and {b + c} hours respectively. How long do they take together?",
        f"The probability of rain on any day is {rng.choice([0.1, 0.2, 0.3, 0.4])}. What is the probability of at least one dry day in a {c}-day week?",
    ]
    return rng.choice(problems)


def extract(rng: random.Random) -> str:
    """Information extraction from generated notes, emails and passages."""
    topic = rng.choice(TOPICS)
    person = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    if rng.random() < 0.5:
        email = (
            f"Hi team,\n\nFollowing our call on {rng.randint(1, 28)} {rng.choice(MONTHS)}, {person} will lead the "
            f"pilot on {topic['name']} in {rng.choice(TOWNS)}. The budget is {rng.randrange(2000, 90000, 500)} pounds "
            f"and the first review is due on {rng.randint(1, 28)} {rng.choice(MONTHS)}. Please send questions to "
            f"{person.split()[0].lower()}@example.org.\n\nThanks,\n{rng.choice(FIRST)}"
        )
        return f"Extract the following fields from the email as JSON: lead, project, town, budget_gbp, review_date, contact_email.\n\n{email}"
    text = passage(rng, topic, _passage_len(rng))
    what = rng.choice(
        [
            "every person's name",
            "all numbers with what they refer to",
            "every place name",
            "all dates and months mentioned",
        ]
    )
    return f"List {what} in the text below, one per line.\n\n{text}"


def chat(rng: random.Random) -> str:
    """Multi-turn conversations rendered as one prompt; the model writes the next turn."""
    topic = rng.choice(TOPICS)
    turns = [
        f"User: I'm thinking about starting a project on {topic['name']} in my town. Where do I begin?",
        f"Assistant: A good first step is to talk to {topic['actor']} nearby and find out whether {topic['place']} are available.",
        f"User: They are, but I'm worried about {topic['problem']}.",
        f"Assistant: That is a common concern. Many groups track {topic['metric']} from the start so they can spot it early.",
        "User: How much time will it take each week?",
        "Assistant: It depends on the scale, but a small pilot usually needs a few hours a week from two or three people.",
        "User: And how do I convince the council to help?",
    ]
    k = rng.choice([3, 5, 7])
    return "\n".join(turns[:k]) + "\nAssistant:"


def rewrite(rng: random.Random) -> str:
    """Editing and rewriting requests."""
    topic = rng.choice(TOPICS)
    text = passage(rng, topic, rng.choice([200, 350, 600]))
    ask = rng.choice(
        [
            "Rewrite this in a more formal tone:",
            "Make this text shorter and clearer without losing facts:",
            "Rewrite the following for a ten-year-old reader:",
            "Turn this into a friendly newsletter paragraph:",
            "Fix any awkward phrasing in the text below and explain your changes:",
        ]
    )
    return f"{ask}\n\n{text}"


def brainstorm(rng: random.Random) -> str:
    """Short list-generation requests (one-liners)."""
    topic = rng.choice(TOPICS)
    return rng.choice(
        [
            "List {k} ideas to reduce {problem}.",
            "Give me {k} names for a group working on {name}.",
            "What are {k} questions a journalist might ask about {name}?",
            "Suggest {k} ways {actor} could raise money.",
            "Name {k} things to check before installing {thing} on {place}.",
        ]
    ).format(**topic, k=rng.randint(3, 10))


TASKS: dict[str, tuple[Callable[[random.Random], str], float]] = {
    "summarisation": (summarise, 0.13),
    "qa": (qa, 0.12),
    "code": (code, 0.12),
    "explanation": (explain, 0.10),
    "translation": (translate, 0.08),
    "classification": (classify, 0.08),
    "creative_writing": (creative, 0.08),
    "maths": (maths, 0.08),
    "extraction": (extract, 0.07),
    "chat": (chat, 0.06),
    "rewriting": (rewrite, 0.05),
    "brainstorming": (brainstorm, 0.03),
}


def generate(n: int, seed: int) -> list[dict[str, str]]:
    """``n`` distinct prompts, task drawn by weight, deterministic for ``seed``."""
    rng = random.Random(seed)
    names = list(TASKS)
    weights = [TASKS[t][1] for t in names]
    seen: set[str] = set()
    rows: list[dict[str, str]] = []
    while len(rows) < n:
        task = rng.choices(names, weights)[0]
        text = TASKS[task][0](rng)
        if text in seen:
            continue
        seen.add(text)
        rows.append({"id": f"llem-{len(rows):04d}", "prompt": text, "task": task})
    return rows


def main() -> None:
    """Write the prompt set as JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    rows = generate(args.n, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} prompts to {args.out}")


if __name__ == "__main__":
    main()
