"""The ``wheel`` astro backend: a real chart wheel rendered with Pillow."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from astrowatch.backends.base import AstroTask, CancelToken
from astrowatch.backends.registry import create_backend
from astrowatch.backends.wheel.backend import WheelBackend, dominant_element, render_wheel, wheel_description
from astrowatch.backends.wheel.layout import (
    MIN_SEPARATION,
    POINT_COLOURS,
    R_GLYPH,
    R_TICK_IN,
    spread_longitudes,
    wheel_xy,
)
from astrowatch.chart.model import MAJOR_ASPECTS, SIGNS, Aspect, Chart, House, Point
from astrowatch.core.config import Config
from astrowatch.core.errors import InputError, Interrupted

LONGITUDES = {
    "sun": 132.4, "moon": 347.2, "mercury": 128.9, "venus": 135.1, "mars": 210.6, "jupiter": 45.3,
    "saturn": 330.2, "uranus": 305.8, "neptune": 298.1, "pluto": 244.7, "chiron": 100.2,
    "true_node": 25.9, "mean_lilith": 190.4, "ascendant": 255.3, "medium_coeli": 172.0,
}
RETRO = {"saturn", "neptune", "pluto"}
CUSPS = [255.3, 287.0, 322.5, 352.0, 20.5, 47.0, 75.3, 107.0, 142.5, 172.0, 200.5, 227.0]
ORBS = {"conjunction": 8, "opposition": 8, "trine": 8, "square": 7, "sextile": 5}


def _house_of(lon: float) -> int:
    for i in range(12):
        start, end = CUSPS[i], CUSPS[(i + 1) % 12]
        if (lon - start) % 360 < (end - start) % 360:
            return i + 1
    return 1


def _point(name: str, lon: float, *, houses: bool = True) -> Point:
    return Point(name=name, sign=SIGNS[int(lon // 30)], longitude=lon,
                 house=_house_of(lon) if houses else None, retrograde=name in RETRO)


def _aspects(points: dict[str, Point]) -> list[Aspect]:
    keys = [k for k in points if k not in ("medium_coeli",)]
    found = []
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            dist = abs((points[a].longitude - points[b].longitude + 180) % 360 - 180)
            for kind, angle in MAJOR_ASPECTS.items():
                if abs(dist - angle) <= ORBS[kind]:
                    found.append(Aspect(p1=a, p2=b, kind=kind, orb=round(abs(dist - angle), 2)))
    return found


def full_chart(user: str = "gaby", **extra: object) -> Chart:
    points = {k: _point(k, v) for k, v in LONGITUDES.items()}
    houses = [House(number=i + 1, sign=SIGNS[int(c // 30)], longitude=c) for i, c in enumerate(CUSPS)]
    return Chart(user=user, points=points, houses=houses, aspects=_aspects(points),
                 dominant_element="Fire", source_format="astrowatch", extra=dict(extra))


def sun_only_chart(lon: float = 132.4, user: str = "gaby") -> Chart:
    return Chart(user=user, points={"sun": _point("sun", lon, houses=False)})


def _task(chart: Chart, **params: object) -> AstroTask:
    return AstroTask(job_id="j1", user=chart.user, chart=chart, params=dict(params), seed=1,
                     prompt="", negative_prompt="")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _config(**astro: object) -> Config:
    cfg = Config()
    for key, value in astro.items():
        setattr(cfg.astro, key, value)
    return cfg


def test_full_chart_renders_at_configured_size() -> None:
    backend = create_backend("wheel", "astro", _config(wheel_size=512))
    result = backend.generate(_task(full_chart()))
    assert isinstance(backend, WheelBackend)
    assert result.image.size == (512, 512) and result.image.mode == "RGB"
    assert result.backend == "wheel" and result.model is None
    assert result.params == {"size": 512} and result.seed == 1
    colours = result.image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).getcolors()
    assert colours is not None and len(colours) > 20  # a picture, not a blank canvas


def test_size_param_overrides_config() -> None:
    result = WheelBackend(_config(wheel_size=1024)).generate(_task(sun_only_chart(), size=300))
    assert result.image.size == (300, 300) and result.params == {"size": 300}


@pytest.mark.parametrize("bad", [100, 10_000, "big", 512.5, True])
def test_bad_size_param_is_an_input_error(bad: object) -> None:
    with pytest.raises(InputError, match="params.size"):
        WheelBackend(Config()).generate(_task(sun_only_chart(), size=bad))


def test_sun_only_chart_renders() -> None:
    result = WheelBackend(_config(wheel_size=256)).generate(_task(sun_only_chart()))
    assert result.image.size == (256, 256)
    assert "Soleil en Lion" in result.description
    assert "Lune" not in result.description and "Ascendant" not in result.description


def test_output_is_deterministic() -> None:
    chart = full_chart(name="Gaby")
    assert _png(render_wheel(chart, 384)) == _png(render_wheel(full_chart(name="Gaby"), 384))


def test_planet_is_drawn_at_its_longitude() -> None:
    size, asc = 512, 0.0  # sun-only chart: 0° Aries on the left
    a = np.asarray(render_wheel(sun_only_chart(40.0), size), dtype=np.int16)
    b = np.asarray(render_wheel(sun_only_chart(100.0), size), dtype=np.int16)
    for lon, img, other in ((40.0, a, b), (100.0, b, a)):
        x, y = (round(v) for v in wheel_xy(size, asc, lon, R_GLYPH))
        patch = img[y - 6:y + 7, x - 6:x + 7].reshape(-1, 3)
        # The sun's glyph is drawn in its gold colour exactly there, and not in the other image.
        gold = np.abs(patch - np.array(POINT_COLOURS["sun"])).sum(axis=1) < 60
        assert gold.sum() >= 4
        assert np.abs(other[y - 6:y + 7, x - 6:x + 7] - img[y - 6:y + 7, x - 6:x + 7]).max() > 80
    # Far from both longitudes (and from the texts), the two wheels are identical.
    x, y = (round(v) for v in wheel_xy(size, asc, 250.0, (R_GLYPH + R_TICK_IN) / 2))
    assert np.array_equal(a[y - 10:y + 11, x - 10:x + 11], b[y - 10:y + 11, x - 10:x + 11])


def test_ascendant_is_on_the_left() -> None:
    chart = full_chart()
    x, y = wheel_xy(1000, LONGITUDES["ascendant"], LONGITUDES["ascendant"], 1.0)
    assert x == pytest.approx(500 - 385) and y == pytest.approx(550)
    x, y = wheel_xy(1000, LONGITUDES["ascendant"], LONGITUDES["ascendant"] + 90, 1.0)  # IC side
    assert x == pytest.approx(500) and y > 550 + 380
    assert render_wheel(chart, 256).size == (256, 256)


def test_close_planets_are_spread_apart() -> None:
    lons = [128.9, 132.4, 135.1, 300.0]
    shown = spread_longitudes(lons)
    cluster = sorted(shown[:3])
    assert all(b - a >= MIN_SEPARATION - 1e-6 for a, b in zip(cluster, cluster[1:], strict=False))
    assert shown[3] == pytest.approx(300.0)  # isolated points do not move
    assert sum(cluster) / 3 == pytest.approx(sum(lons[:3]) / 3)
    wrap = spread_longitudes([358.0, 1.0])
    assert abs((wrap[1] - wrap[0] + 180) % 360 - 180) == pytest.approx(MIN_SEPARATION)


def test_french_description() -> None:
    text = wheel_description(full_chart(name="Gaby"), "fr")
    assert text.startswith("Roue du thème de Gaby : Soleil en Lion (maison 8), Lune en Poissons (maison 3), "
                           "Ascendant Sagittaire.")
    assert "Élément dominant : le Feu." in text
    assert "10 planètes" in text and "12 maisons" in text


def test_english_description_from_backend() -> None:
    result = WheelBackend(_config(language="en", wheel_size=256)).generate(_task(full_chart()))
    text = result.description
    assert text.startswith("Chart wheel for Gaby: Sun in Leo (house 8), Moon in Pisces (house 3), "
                           "Ascendant Sagittarius.")
    assert "Dominant element: Fire." in text


def test_dominant_element_is_computed_when_missing() -> None:
    chart = sun_only_chart(200.0)  # Libra
    assert chart.dominant_element is None
    assert dominant_element(chart) == "Air"
    assert "Élément dominant : l'Air." in wheel_description(chart, "fr")
    assert "Houses not given." in wheel_description(chart, "en")


def test_chart_without_moon_ascendant_houses_or_aspects() -> None:
    points = {k: _point(k, LONGITUDES[k], houses=False) for k in ("sun", "mercury", "venus", "mars")}
    chart = Chart(user="léa", points=points)
    image = render_wheel(chart, 256, "en")
    assert image.size == (256, 256)
    text = wheel_description(chart, "en")
    assert text.startswith("Chart wheel for Léa: Sun in Leo.")


def test_interrupt_before_rendering() -> None:
    token = CancelToken()
    token.request_interrupt()
    task = _task(sun_only_chart())
    task.cancel = token
    with pytest.raises(Interrupted):
        WheelBackend(Config()).generate(task)
