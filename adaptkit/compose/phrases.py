"""Noun phrases in a tokenised caption: where one starts and ends, and its head noun."""

from __future__ import annotations

from .lexicon import (
    ADVERBS,
    BE,
    CLOSED,
    DETERMINERS,
    FRAMES,
    GERUND_COMPOUNDS,
    PARTS,
    POSSESSIVES,
    POSTNOMINAL,
    PREPOSITIONS,
    PRONOUNS,
    QUANTITY,
    RELATIVES,
    VERBAL_AUXILIARIES,
)
from .words import adjective, adjective_only, determiner, is_noun, noun_lemma, verb_lemma, word_form


def match_preposition(words: list[str], i: int) -> str | None:
    for prep in PREPOSITIONS:
        parts = prep.split()
        if words[i:i + len(parts)] == parts:
            return prep
    return None


def strip_frame(words: list[str]) -> list[str]:
    """Drop "a picture of", "aerial view of", "there is", "this is" at the start."""
    if words[:2] in (["there", "is"], ["there", "are"], ["this", "is"], ["here", "is"], ["there", "was"],
                     ["there", "were"]):
        words = words[2:]
    for i, word in enumerate(words[:6]):
        if word in FRAMES:
            rest = words[i + 1:]
            if rest[:1] == ["up"]:
                rest = rest[1:]
            if rest[:1] == ["of"]:
                return rest[1:]
            break
        if word not in DETERMINERS and not adjective(word) and word not in ("aerial", "sky", "and", "inside"):
            break
    return words


def through_of(words: list[str]) -> list[str]:
    """A noun phrase whose head is a quantity or part noun followed by "of" hands over to the rest."""
    while True:
        content = [i for i, w in enumerate(words) if w not in DETERMINERS]
        if not content:
            return words
        of = next((i for i in content if words[i] == "of"), None)
        if of is None or of == 0:
            return words
        heads = [w for w in words[:of] if w not in DETERMINERS and not adjective_only(w)]
        if heads and heads[-1] in QUANTITY | PARTS:
            words = words[of + 1:]
            continue
        return words


def through_determiner_of(words: list[str]) -> list[str]:
    """ "all of these men", "one of the dogs": the noun after "of" heads the phrase."""
    if "of" in words[:3]:
        at = words.index("of")
        if at and all(w in DETERMINERS or w in POSSESSIVES for w in words[:at]):
            return words[at + 1:]
    return words


def noun_phrase(words: list[str]) -> tuple[str, str] | None:
    """(head lemma, phrase) of a noun phrase: quantity/part nouns resolved, cut at a relative
    pronoun, a preposition or a clause boundary; the first conjunct's head."""
    words = through_of(through_determiner_of([w for w in words if w != ","]))
    cut = len(words)
    for i, word in enumerate(words):
        if word in RELATIVES and i > 0:
            cut = i
            break
        if word == "and" and i > 0:
            if adjective(words[i - 1]) and i + 1 < len(words) and adjective(words[i + 1]) and \
                    i + 2 < len(words) and words[i + 2] not in CLOSED:
                continue
            cut = i
            break
        if i > 0 and (match_preposition(words, i) or word == "of"):
            cut = i
            break
    phrase = [w for i, w in enumerate(words[:cut]) if not determiner(words, i) and w not in VERBAL_AUXILIARIES
              and w not in PRONOUNS and w != "and"]
    while phrase and (phrase[-1] in ADVERBS or (adjective_only(phrase[-1]) or phrase[-1] in POSTNOMINAL)
                      and len(phrase) > 1 and any(is_noun(w) for w in phrase[:-1])):
        phrase.pop()
    if not phrase:
        return None
    head = noun_lemma(phrase[-1])
    return head, " ".join(phrase[:-1] + [head])


def _filler(words: list[str], i: int) -> bool:
    """An adverb, a comma, an -ly adverb or a form of *be*: skipped before an object."""
    word = words[i]
    return word in ADVERBS or word == "," or (word.endswith("ly") and adjective_only(word)) or word in BE


def _participle_before_particle(words: list[str], i: int) -> bool:
    """A past or -ing verb form (not a noun) followed by a preposition or an adverb: "parked
    next to", "sitting down"; skipped before an object."""
    word, lemma = words[i], verb_lemma(words[i])
    if not lemma or word == lemma or is_noun(word) or word_form(word, lemma) not in ("past", "ing"):
        return False
    return i + 1 < len(words) and bool(match_preposition(words, i + 1) or words[i + 1] in ADVERBS)


def _after_bare_noun(rest: list[str], j: int) -> bool:
    return is_noun(rest[j - 1]) and not determiner(rest, j - 1)


def _clause_verb(rest: list[str], j: int) -> bool:
    """An -ing or past verb right after a bare noun that opens a new clause: at the end, or
    followed by a determiner, a preposition or an adverb ("a dog chasing a ball")."""
    word, lemma = rest[j], verb_lemma(rest[j])
    if not lemma or is_noun(word) or not _after_bare_noun(rest, j) or word_form(word, lemma) not in ("ing", "past"):
        return False
    following = rest[j + 1] if j + 1 < len(rest) else None
    return following is None or following in DETERMINERS or match_preposition(rest, j + 1) is not None \
        or following in ADVERBS


def _joins_adjectives(rest: list[str], j: int) -> bool:
    """An "and" between two adjectives ("red and white"), which stays inside the noun phrase."""
    return adjective(rest[j - 1]) and j + 1 < len(rest) and adjective(rest[j + 1])


def _gerund_after_noun(rest: list[str], j: int) -> bool:
    """An -ing word after a bare noun that is not a compound's head ("a man holding", not "a
    dining table")."""
    word = rest[j]
    compound = j + 1 < len(rest) and rest[j + 1] in GERUND_COMPOUNDS
    return word.endswith("ing") and bool(verb_lemma(word)) and _after_bare_noun(rest, j) and not compound


def _ends_noun_phrase(rest: list[str], j: int) -> bool:
    """Whether word j (> 0) of ``rest`` ends the noun phrase that starts it."""
    word = rest[j]
    if word in RELATIVES or word in BE | {"has", "have", "had"}:
        return True
    if word == "," and is_noun(rest[j - 1]) and not adjective(rest[j - 1]):
        return True
    if word == "and" and not _joins_adjectives(rest, j):
        return True
    if match_preposition(rest, j) and word != "of":
        return True
    return _clause_verb(rest, j) or _gerund_after_noun(rest, j)


def object_after(words: list[str]) -> tuple[str, str] | None:
    """The first noun phrase after a verb or preposition, past particles, adverbs and prepositions."""
    i = 0
    while i < len(words):
        prep = match_preposition(words, i)
        if prep:
            i += len(prep.split())
        elif _filler(words, i):
            i += 1
        elif words[i] in PRONOUNS and not determiner(words, i):
            return None
        elif _participle_before_particle(words, i):
            i += 1
        else:
            break
    rest = words[i:]
    end = next((j for j in range(1, len(rest)) if _ends_noun_phrase(rest, j)), len(rest))
    return noun_phrase(rest[:end]) if rest[:end] else None
