"""The reviewer's description: a few sentences, in French or English, saying what the image
should show and which part of the chart each element comes from."""

from __future__ import annotations

from collections.abc import Iterable

from astrowatch.chart.model import Point
from astrowatch.fusion.data import correspondences
from astrowatch.fusion.motifs import Reading, point_entry

WORDS = {
    "fr": {
        "style": "Style {label} : {about}.",
        "centre": "Au centre, {text} ({where}).",
        "mood": "Humeur et lumière : {text} ({where}).",
        "setting": "Cadre : {text} ({where}).",
        "palette": "Palette : {palette} ; matières : {materials} (élément dominant : {element}).",
        "colours": "Couleurs du signe solaire ({sign}) : {text}.",
        "composition": "Composition {text} (mode dominant : {modality}).",
        "aspects": "Aspects : {items}.",
        "aspect": "{text} ({p1} {kind} {p2}, orbe {orb}°)",
        "detail": "Détail : {text} (maison {house}, {theme}{planets}).",
        "planets": ", {n} planètes",
        "retrograde": "Rétrograde : {text} ({names}).",
        "dropped": "Laissé hors du prompt pour tenir en {budget} jetons : {items}.",
        "in": "{point} en {sign}", "asc": "Ascendant {sign}", "house": "maison {n}",
        "no_sun": "Soleil inconnu", "joiner": " ; ",
    },
    "en": {
        "style": "Style {label}: {about}.",
        "centre": "At the centre, {text} ({where}).",
        "mood": "Mood and light: {text} ({where}).",
        "setting": "Setting: {text} ({where}).",
        "palette": "Palette: {palette}; materials: {materials} (dominant element: {element}).",
        "colours": "Colours of the Sun sign ({sign}): {text}.",
        "composition": "Composition: {text} (dominant modality: {modality}).",
        "aspects": "Aspects: {items}.",
        "aspect": "{text} ({p1} {kind} {p2}, orb {orb}°)",
        "detail": "Detail: {text} (house {house}, {theme}{planets}).",
        "planets": ", {n} planets",
        "retrograde": "Retrograde: {text} ({names}).",
        "dropped": "Left out of the prompt to fit {budget} tokens: {items}.",
        "in": "{point} in {sign}", "asc": "Ascendant in {sign}", "house": "house {n}",
        "no_sun": "Sun unknown", "joiner": "; ",
    },
}
SLOT_NAMES = {
    "fr": {"prefix": "le médium", "mood": "l'humeur", "setting": "le cadre", "palette": "la palette",
           "colours": "les couleurs du signe", "materials": "les matières",
           "composition": "la composition", "aspects": "l'aspect {name}", "detail": "le détail de maison",
           "retrograde": "le détail rétrograde", "suffix": "la finition du style",
           "quality": "les mots de qualité", "figure": "la figure centrale"},
    "en": {"prefix": "the medium", "mood": "the mood", "setting": "the setting", "palette": "the palette",
           "colours": "the sign colours", "materials": "the materials",
           "composition": "the composition", "aspects": "the aspect {name}", "detail": "the house detail",
           "retrograde": "the retrograde detail", "suffix": "the style finish",
           "quality": "the quality tags", "figure": "the central figure"},
}


def _name(key: str, lang: str) -> str:
    names: dict[str, str] = point_entry(key)["name"]
    return names[lang]


def _sign(sign: str, lang: str) -> str:
    entry = correspondences()["signs"].get(sign)
    return entry["name"][lang] if entry else sign


def _where(point: Point, key: str, lang: str) -> str:
    w = WORDS[lang]
    sign = _sign(point.sign, lang)
    if key == "ascendant":
        text = w["asc"].format(sign=sign)
    else:
        text = w["in"].format(point=_name(key, lang), sign=sign)
    show_house = point.house and key != "ascendant"  # the Ascendant opens house 1 by definition
    return f"{text}, {w['house'].format(n=point.house)}" if show_house else text


def _orb(orb: float, lang: str) -> str:
    text = f"{abs(orb):.1f}"
    return text.replace(".", ",") if lang == "fr" else text


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _chart_sentences(r: Reading, lang: str) -> Iterable[str]:
    w, chart = WORDS[lang], r.chart
    where = _where(chart.sun, "sun", lang) if chart.sun else w["no_sun"]
    yield w["centre"].format(text=r.figure.text(lang), where=where)
    if r.mood and chart.moon:
        yield w["mood"].format(text=r.mood.text(lang), where=_where(chart.moon, "moon", lang))
    if r.setting and chart.ascendant:
        yield w["setting"].format(text=r.setting.text(lang), where=_where(chart.ascendant, "ascendant", lang))
    if r.palette and r.materials and r.element:
        element = correspondences()["elements"][r.element]["name"][lang]
        yield w["palette"].format(palette=r.palette.text(lang), materials=r.materials.text(lang),
                                  element=element)
    if r.colours and chart.sun:
        yield w["colours"].format(sign=_sign(chart.sun.sign, lang), text=r.colours.text(lang))
    if r.composition and r.modality:
        modality = correspondences()["modalities"][r.modality]["name"][lang]
        yield w["composition"].format(text=r.composition.text(lang), modality=modality)


def _detail_sentences(r: Reading, lang: str) -> Iterable[str]:
    w, data = WORDS[lang], correspondences()
    if r.aspects:
        items = [w["aspect"].format(text=frag.text(lang), p1=_name(a.p1, lang), p2=_name(a.p2, lang),
                                    kind=data["aspects"][a.kind]["name"][lang], orb=_orb(a.orb, lang))
                 for a, frag in r.aspects]
        yield w["aspects"].format(items=w["joiner"].join(items))
    if r.house is not None:
        number, planets, frag = r.house
        theme = data["houses"][number]["theme"][lang]
        extra = w["planets"].format(n=planets) if planets >= 2 else ""
        yield w["detail"].format(text=frag.text(lang), house=number, theme=theme, planets=extra)
    if r.retro_detail and r.retrograde:
        names = ", ".join(_name(k, lang) for k in r.retrograde)
        yield w["retrograde"].format(text=r.retro_detail.text(lang), names=names)


def _dropped_sentence(r: Reading, dropped_keys: list[str], budget: int, lang: str) -> str | None:
    names: list[str] = []
    for key in dropped_keys:
        slot, _, index = key.partition(":")
        label = SLOT_NAMES[lang].get(slot, slot)
        if slot == "aspects":
            a = r.aspects[int(index)][0]
            kind = correspondences()["aspects"][a.kind]["name"][lang]
            label = label.format(name=f"{_name(a.p1, lang)} {kind} {_name(a.p2, lang)}")
        if label not in names:
            names.append(label)
    if not names:
        return None
    return WORDS[lang]["dropped"].format(budget=budget, items=", ".join(names))


def describe(r: Reading, lang: str, dropped_keys: list[str], budget: int) -> str:
    """A few sentences for the reviewer in ``lang`` (``fr`` or ``en``)."""
    lang = lang if lang in WORDS else "fr"
    style = r.style
    about = style.about.get(lang) or style.about.get("en") or style.name
    sentences = [WORDS[lang]["style"].format(label=style.label.get(lang, style.name), about=about)]
    sentences += _chart_sentences(r, lang)
    sentences += _detail_sentences(r, lang)
    dropped = _dropped_sentence(r, dropped_keys, budget, lang)
    if dropped:
        sentences.append(dropped)
    return " ".join(_capital(s) for s in sentences)
