"""Words of a caption by form: lemmas from lemminflect's English lexicon, nouns, verbs,
adjectives, plurals and tokens (the vocabulary the parser's rules are written in)."""

from __future__ import annotations

import re
from functools import lru_cache

from lemminflect import getAllInflections, getAllLemmas, getAllLemmasOOV

from .lexicon import CLOSED, DETERMINERS, IRREGULAR_NOUNS, PLURAL_DETERMINERS, PLURAL_ONLY, POSSESSIVES


@lru_cache(maxsize=65536)
def lemma_classes(word: str) -> dict[str, tuple[str, ...]]:
    return getAllLemmas(word)


def noun_lemma(word: str) -> str:
    """Singular form of a noun (lexicon first, then English rules)."""
    if word in IRREGULAR_NOUNS:
        return IRREGULAR_NOUNS[word]
    known = lemma_classes(word).get("NOUN")
    if known:
        return known[0]
    return getAllLemmasOOV(word, "NOUN")["NOUN"][0]


def verb_lemma(word: str) -> str | None:
    """The base form of ``word`` if it can be a verb (the lexicon, or regular "-ing"/"-ed"/"-s"
    morphology for words it does not list), else ``None``; plural-only nouns are never verbs."""
    if word in PLURAL_ONLY:
        return None
    known = lemma_classes(word)
    if "VERB" in known:
        return known["VERB"][0]
    if not known and word.endswith(("ing", "ed")) and len(word) > 4:
        return getAllLemmasOOV(word, "VERB")["VERB"][0]
    return None


def word_form(word: str, lemma: str) -> str:
    """Which verb form ``word`` is of ``lemma``: ``"ing"``, ``"past"``, ``"s"``, ``"base"`` or ``""``."""
    if word == lemma:
        return "base"
    forms = getAllInflections(lemma, upos="VERB")
    if word in forms.get("VBG", ()) or word.endswith("ing"):
        return "ing"
    if word in forms.get("VBD", ()) or word in forms.get("VBN", ()) or word.endswith("ed"):
        return "past"
    if word in forms.get("VBZ", ()):
        return "s"
    return ""


def participle(word: str, lemma: str) -> bool:
    return word in getAllInflections(lemma, upos="VERB").get("VBN", ()) or word.endswith("ed")


def is_noun(word: str) -> bool:
    if word in CLOSED:
        return False
    return word in IRREGULAR_NOUNS or "NOUN" in lemma_classes(word) or (not lemma_classes(word) and word.isalpha())


def adjective(word: str) -> bool:
    """Can be an adjective (colours, sizes, ...)."""
    return "ADJ" in lemma_classes(word)


def determiner(words: list[str], i: int) -> bool:
    """A determiner here: always-determiners, and possessives or numerals that a noun follows."""
    word = words[i]
    if word in POSSESSIVES:
        return i + 1 < len(words) and words[i + 1] not in CLOSED
    return word in DETERMINERS


def adjective_only(word: str) -> bool:
    lemmas = lemma_classes(word)
    return bool(lemmas) and set(lemmas) <= {"ADJ", "ADV"}


def plural(word: str) -> bool:
    return word in PLURAL_DETERMINERS or (word not in IRREGULAR_NOUNS or IRREGULAR_NOUNS[word] != word) and \
        is_noun(word) and noun_lemma(word) != word


def _dropped_g(word: str) -> str:
    """ "brushin" (a dropped g, with or without its apostrophe) as "brushing", when the lexicon
    knows only the latter."""
    bare = word.rstrip("'")
    if bare.endswith("in") and not lemma_classes(bare) and "VERB" in lemma_classes(bare + "g"):
        return bare + "g"
    return word


def tokens(text: str) -> list[str]:
    words = re.findall(r"[a-z]+(?:[-'][a-z]+)*'?|,", text.lower().replace("’", "'"))
    words = [w[:-2] if w.endswith("'s") else _dropped_g(w).rstrip("'") for w in words if w not in ("s", "'s")]
    return [w for w in words if w]
