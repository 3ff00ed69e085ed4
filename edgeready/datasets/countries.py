"""The embedded default QA set: country facts generated from two PyPI packages, no hand-typed answers.

Knowledge base: `countryinfo` (capital, ISO 4217 currency codes, ISO 639-1 language codes, region,
UN M49 intermediate region, demonym, land borders as ISO alpha-3, population) and
`pycountry` (current ISO 3166-1/3166-2 lists, ISO 4217 currency names, ISO 639 language names).
`KB_PINNED` records the versions this module was written against; `kb_provenance()` reads the installed
ones at call time so a report can cite them.

Which countries (so a 270M-parameter model has a fair chance):
- the entry the library itself resolves the ISO alpha-3 code to (de-duplicates Burma/Myanmar and the
  two Palestine entries), with a code that is still in ISO 3166-1 (drops Scotland, Serbia and
  Montenegro, the Netherlands Antilles);
- not a dependency: ISO 3166-2 lists it as a subdivision of another country (code `<parent>-<alpha2>`,
  same name) and it has no subdivisions of its own (drops Hong Kong, Macao, Puerto Rico, Guam, ...;
  Taiwan stays: ISO gives it subdivisions);
- population >= `DEFAULT_MIN_POPULATION` (5 million) and a capital (drops Antarctica and the
  remaining territories; leaves 118 countries).

Questions (`hops` = relations composed):
- one hop, per country: capital, continent, currency, official language;
- two hops through a bridge country that the question does not name:
  - currency / continent / language of "the country whose capital is X", only when X is the capital of
    exactly one current KB entry (territories included; so not Jerusalem) and does not spell the
    country's name (not "Mexico City", "Tunis");
  - the capital of "the country that borders both X and Y", only when exactly one current KB entry
    borders both and neither neighbour's name contains the bridge's (not Niger via Nigeria).

Accepted answers, all derived by rule:
- continent: the KB region; the Americas become "North America" or "South America" (M49 intermediate
  region "South America" -> South America, else North America), keeping "Americas"; Oceania also
  accepts "Australia" (the seven-continent model's name). Countries with two or more land neighbours
  in another region straddle a continental boundary (Russia, Turkey) and get no continent question.
- currency: the ISO 4217 name ("Yen"), the code ("JPY"), and the unit words: the words of the name that
  do not name the country (country-name or demonym stems, acronyms such as US/CFA/BCEAO, "New"), e.g.
  "Dollar" of "US Dollar", "Franc" of "CFA Franc BCEAO", "Peso" of "Peso Uruguayo", "Yuan" and
  "Renminbi" of "Yuan Renminbi" (also "Oro" of "Cordoba Oro": harmless, no wrong answer says it).
  A unit word alone is unambiguous here because the question fixes the
  country. A national currency (code prefix = the country's alpha-2) whose name is one unit word also
  gets "<demonym> <unit>" ("Japanese Yen"). ISO fund codes (USN, CHE, CLF, ...) and codes no longer in
  ISO 4217 (the KB's stale VEF, HRK, ZMK, ...) are dropped; a country left with none gets no currency
  question.
- language: every official language's ISO 639 name without qualifiers in parentheses ("Swahili"), and
  the last word of two-word names whose first word is a direction or era ("Modern Greek" -> "Greek",
  "Central Khmer" -> "Khmer"). Codes pycountry does not know (the KB's "rs") are dropped.

The KB is frozen in its package version; a few facts are dated (e.g. Kazakhstan's capital "Nur-Sultan",
since renamed Astana). The gold is what the KB says, so reports should cite `kb_provenance()`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import itertools
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pycountry
from countryinfo import CountryInfo

from edgeready.records import QAItem

SOURCE = "countries-kb"
KB_PACKAGES = ("countryinfo", "pycountry")
# The versions the rules above were checked against; kb_provenance() reports what is installed.
KB_PINNED = {"countryinfo": "1.0.1", "pycountry": "26.2.16"}
DEFAULT_MIN_POPULATION = 5_000_000

# ISO 4217 codes flagged as funds / units of account, not money people pay with.
_FUND_CODES = frozenset({"BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "USS", "UYI", "UYW"})
# First words of ISO 639 names that qualify rather than name a language ("Modern Greek").
_LANGUAGE_QUALIFIERS = frozenset(
    {"modern", "central", "north", "south", "east", "west", "northern", "southern", "eastern", "western"}
)
# Names read with "the" in English: republics, unions, plurals. Grammar only; answers do not depend on it.
_THE_WORDS = frozenset({"republic", "kingdom", "united", "states", "emirates", "islands"})
_THE_NAMES = frozenset({"netherlands", "philippines", "bahamas", "maldives", "comoros", "seychelles"})
_STOP_WORDS = frozenset({"and", "of", "the", "de", "en", "la", "el"})
_PARENTHETICAL = re.compile(r"\s*\([^)]*\)")


@dataclass(frozen=True)
class Country:
    """One KB entry, reduced to the fields the questions use."""

    alpha3: str
    alpha2: str
    name: str
    capital: str
    region: str
    intermediate_region: str
    demonym: str
    currencies: tuple[str, ...]
    languages: tuple[str, ...]
    borders: tuple[str, ...]
    population: int


def kb_provenance() -> dict[str, str]:
    """Installed versions of the KB packages, read now (not at import), for reports to cite."""
    return {package: importlib.metadata.version(package) for package in KB_PACKAGES}


def load_countries_qa(*, min_population: int = DEFAULT_MIN_POPULATION) -> list[QAItem]:
    """The embedded QA set, sorted by id. Deterministic: no dict or set order reaches the output."""
    return list(_build_items(min_population))


def embedded_concepts(*, min_population: int = DEFAULT_MIN_POPULATION) -> list[str]:
    """Well-known names from the same KB: each selected country followed by its capital.

    Most populous first (ties by name), so a prefix holds the best-known names.
    """
    ordered = sorted(selected_countries(min_population), key=lambda c: (-c.population, c.name))
    names = itertools.chain.from_iterable((c.name, c.capital) for c in ordered)
    return list(dict.fromkeys(names))


def selected_countries(min_population: int = DEFAULT_MIN_POPULATION) -> list[Country]:
    """The countries questions are asked about, sorted by alpha-3 (see the module docstring)."""
    return [c for c in _kb_countries() if c.population >= min_population and c.capital]


# ---------------------------------------------------------------------------------------------------
# Reading the KB


@functools.cache
def _kb_countries() -> tuple[Country, ...]:
    """Every sovereign KB entry with a current ISO code, sorted by alpha-3 (no population filter)."""
    entries = _raw_entries()
    return tuple(
        _country(code, entry) for code, entry in sorted(entries.items()) if not _is_dependency(entry)
    )


@functools.cache
def _raw_entries() -> Mapping[str, Mapping[str, Any]]:
    """KB entries with a current ISO 3166-1 code (territories included), one per code: the entry
    `CountryInfo(code)` itself resolves to. Uniqueness checks (capitals, borders) run over these."""
    entries: dict[str, Mapping[str, Any]] = {}
    for entry in CountryInfo.all().values():
        alpha3 = (entry.get("ISO") or {}).get("alpha3")
        if alpha3 and alpha3 not in entries and pycountry.countries.get(alpha_3=alpha3) is not None:
            entries[alpha3] = CountryInfo(alpha3).info()
    return entries


def _all_capitals() -> Counter[str]:
    """How many current KB entries (territories too) have each capital, by normalized name."""
    entries = _raw_entries().values()
    return Counter(_norm(e["capital"]) for e in entries if isinstance(e.get("capital"), str))


def _is_dependency(entry: Mapping[str, Any]) -> bool:
    """ISO 3166-2 lists the entry as part of another country and gives it no subdivisions of its own."""
    alpha2 = entry["ISO"]["alpha2"]
    if pycountry.subdivisions.get(country_code=alpha2):
        return False
    names = _country_names(entry)
    for subdivision in _subdivisions_by_suffix().get(alpha2, ()):
        if any(f" {name} " in f" {_norm(subdivision.name)} " for name in names):
            return True
    return False


@functools.cache
def _subdivisions_by_suffix() -> Mapping[str, tuple[Any, ...]]:
    """ISO 3166-2 subdivisions of other countries, by the part after the dash ("US-PR" under "PR")."""
    found: dict[str, list[Any]] = {}
    for subdivision in pycountry.subdivisions:
        parent, _, suffix = subdivision.code.partition("-")
        if suffix != parent:
            found.setdefault(suffix, []).append(subdivision)
    return {suffix: tuple(subs) for suffix, subs in found.items()}


def _country(alpha3: str, entry: Mapping[str, Any]) -> Country:
    capital = entry.get("capital")
    return Country(
        alpha3=alpha3,
        alpha2=entry["ISO"]["alpha2"],
        name=entry["name"],
        # A few entries store a list or null; those never pass the "has a capital" filter.
        capital=capital.strip() if isinstance(capital, str) else "",
        region=entry.get("region") or "",
        intermediate_region=entry.get("intermediateregion") or "",
        demonym=entry.get("demonym") or "",
        currencies=tuple(entry.get("currencies") or ()),
        languages=tuple(entry.get("languages") or ()),
        borders=tuple(entry.get("borders") or ()),
        population=int(entry.get("population") or 0),
    )


def _country_names(entry: Mapping[str, Any]) -> set[str]:
    """Normalized names of one entry: the KB's and ISO's (name, common name, official name)."""
    names = {_norm(entry["name"])}
    iso = pycountry.countries.get(alpha_3=entry["ISO"]["alpha3"])
    if iso is not None:
        for field in ("name", "common_name", "official_name"):
            if getattr(iso, field, None):
                names.add(_norm(getattr(iso, field)))
    return names


# ---------------------------------------------------------------------------------------------------
# Building the questions


@functools.cache
def _build_items(min_population: int) -> tuple[QAItem, ...]:
    countries = selected_countries(min_population)
    by_code = {c.alpha3: c for c in countries}
    capital_counts = _all_capitals()
    items: list[QAItem] = []
    for country in countries:
        items.extend(_single_hop(country))
        items.extend(_via_capital(country, capital_counts))
        items.extend(_via_borders(country, by_code))
    return tuple(sorted(items, key=lambda item: item.id))


def _single_hop(country: Country) -> list[QAItem]:
    name = _with_article(country.name)
    candidates = [
        ("capital", f"What is the capital of {name}?", (country.capital,)),
        ("continent", f"Which continent is {name} in?", _continent_answers(country)),
        ("currency", f"What currency is used in {name}?", _currency_answers(country)),
        ("language", f"What language is spoken in {name}?", _language_answers(country)),
    ]
    return [
        QAItem(f"kb-{relation}-{country.alpha3}", question, answers, 1, SOURCE, topic=country.name)
        for relation, question, answers in candidates
        if answers
    ]


def _via_capital(country: Country, capital_counts: Counter[str]) -> list[QAItem]:
    """Two hops: capital -> country -> currency / continent / language."""
    if capital_counts[_norm(country.capital)] != 1 or _names_overlap(country.capital, country.name):
        return []
    bridge = f"the country whose capital is {country.capital}"
    candidates = [
        ("currency", f"What currency is used in {bridge}?", _currency_answers(country)),
        ("continent", f"On which continent is {bridge}?", _continent_answers(country)),
        ("language", f"What language is spoken in {bridge}?", _language_answers(country)),
    ]
    # topic stays empty: the bridge country is the hidden step and must not reach a prompt.
    return [
        QAItem(f"kb2-{relation}-via-capital-{country.alpha3}", question, answers, 2, SOURCE)
        for relation, question, answers in candidates
        if answers
    ]


def _via_borders(country: Country, by_code: Mapping[str, Country]) -> list[QAItem]:
    """Two hops: two neighbours -> the one country bordering both -> its capital."""
    pair = _identifying_neighbours(country, by_code)
    if pair is None:
        return []
    first, second = (_with_article(by_code[code].name) for code in pair)
    question = f"What is the capital of the country that borders both {first} and {second}?"
    return [QAItem(f"kb2-capital-via-borders-{country.alpha3}", question, (country.capital,), 2, SOURCE)]


def _identifying_neighbours(country: Country, by_code: Mapping[str, Country]) -> tuple[str, str] | None:
    """The first pair of selected neighbours (most populous first) that only this country borders both.

    Uniqueness is checked against every current KB entry, so a territory bordering both disqualifies too.
    """
    neighbours = sorted(
        (by_code[code] for code in country.borders if code in by_code),
        key=lambda c: (-c.population, c.alpha3),
    )
    # A neighbour whose name contains the bridge's ("Nigeria" for Niger) would give it away.
    neighbours = [n for n in neighbours if not _names_overlap(n.name, country.name)]
    for a, b in itertools.combinations(neighbours, 2):
        if _bordering_both(a.alpha3, b.alpha3) == (country.alpha3,):
            return a.alpha3, b.alpha3
    return None


def _bordering_both(first: str, second: str) -> tuple[str, ...]:
    return tuple(
        code
        for code, entry in sorted(_raw_entries().items())
        if {first, second} <= set(entry.get("borders") or ())
    )


def _continent_answers(country: Country) -> tuple[str, ...]:
    abroad = [code for code in country.borders if _kb_region(code) not in ("", country.region)]
    # One neighbour across a boundary is normal (Spain/Morocco, China/Russia); two or more means the
    # country straddles it (Russia, Turkey), where either continent is a fair answer.
    if not country.region or len(abroad) >= 2:
        return ()
    if country.region == "Americas":
        half = "South America" if country.intermediate_region == "South America" else "North America"
        return (half, "Americas")
    if country.region == "Oceania":
        return ("Oceania", "Australia")
    return (country.region,)


def _kb_region(alpha3: str) -> str:
    entry = _raw_entries().get(alpha3)
    return (entry.get("region") or "") if entry else ""


def _currency_answers(country: Country) -> tuple[str, ...]:
    answers: list[str] = []
    qualifiers = _qualifier_words(country)
    for code in country.currencies:
        currency = pycountry.currencies.get(alpha_3=code)
        if code in _FUND_CODES or currency is None:
            continue
        name = _PARENTHETICAL.sub("", currency.name).strip()
        words = name.split()
        units = [w for w in words if not _is_qualifier(w, qualifiers)]
        answers += [name, code]
        if len(words) > 1:
            answers += units
        if len(units) == 1 and code[:2] == country.alpha2 and country.demonym:
            answers.append(f"{country.demonym} {units[0]}")
    return tuple(dict.fromkeys(answers))


def _language_answers(country: Country) -> tuple[str, ...]:
    answers: list[str] = []
    for code in country.languages:
        language = _language(code)
        if language is None:
            continue
        name = _PARENTHETICAL.sub("", language.name).strip()
        answers.append(name)
        common = getattr(language, "common_name", None)
        if common:
            answers.append(_PARENTHETICAL.sub("", common).strip())
        words = name.split()
        if len(words) == 2 and words[0].casefold() in _LANGUAGE_QUALIFIERS:
            answers.append(words[1])
    return tuple(dict.fromkeys(answers))


def _language(code: str) -> Any:
    if len(code) == 2:
        return pycountry.languages.get(alpha_2=code)
    if len(code) == 3:
        return pycountry.languages.get(alpha_3=code)
    return None


# ---------------------------------------------------------------------------------------------------
# Text helpers


def _norm(text: str) -> str:
    """Accents off, casefolded, punctuation to spaces: for comparing names, never for output."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join("".join(c if c.isalnum() else " " for c in plain).split())


def _words(texts: Iterable[str]) -> set[str]:
    return {w for text in texts for w in _norm(text).split() if w not in _STOP_WORDS}


def _qualifier_words(country: Country) -> set[str]:
    iso = pycountry.countries.get(alpha_3=country.alpha3)
    iso_names = [getattr(iso, f, "") or "" for f in ("name", "common_name", "official_name")]
    return _words([country.name, country.demonym, *iso_names])


def _is_qualifier(word: str, qualifiers: set[str]) -> bool:
    """A word of a currency name that names the country rather than the unit."""
    plain = _norm(word)
    return (
        word.isupper()  # US, UAE, CFA, BCEAO
        or plain in _STOP_WORDS
        or plain == "new"
        or any(_same_stem(plain, q) for q in qualifiers)
    )


def _same_stem(a: str, b: str) -> bool:
    """Shared prefix of 5 letters, or all of the shorter word: Uruguayo~Uruguay, Lao~Laos, Rican~Rica."""
    if min(len(a), len(b)) < 3:
        return False
    need = min(5, len(a), len(b))
    return a[:need] == b[:need]


def _names_overlap(text: str, name: str) -> bool:
    """Whether `text` spells (a stem of) a word of `name`: "Kuwait City"/Kuwait, "Tunis"/Tunisia."""
    name_words = _words([name])
    return any(_same_stem(w, n) for w in _words([text]) for n in name_words)


def _with_article(name: str) -> str:
    words = set(_norm(name).split())
    if name.startswith("The ") or not (words & _THE_WORDS or _norm(name) in _THE_NAMES):
        return name
    return f"the {name}"
