"""The stream table (differland_dist/vocabulary/streams.py) is the single source of what a stream is:
every consumer's list equals the table's, and a new row reaches the loss and the evaluation."""

import ast
from pathlib import Path

import cf_units
import jax.numpy as jnp
import numpy as np
import pytest

from differland_dist import config as config_mod
from differland_dist.vocabulary import streams as S
from differland_dist.data import schema
from differland_dist.evaluation import streams as ev
from differland_dist.vocabulary.series import SERIES_BY_NAME, STREAM_SERIES
from differland_dist.vocabulary.labels import Labels
from differland_dist.loss import terms as L
from differland_dist.vocabulary.dalec_io import OUTPUTS

PKG = Path(S.__file__).parent


def test_every_consumer_lists_the_tables_streams():
    names = [s.name for s in S.label_order()]
    assert list(schema.STREAM_NAMES) == names == list(ev.RULES) == list(S.STREAM_NAMES)
    assert set(STREAM_SERIES) == set(names)
    for st in S.STREAMS:
        row = schema.STREAMS[schema.STREAM_INDEX[st.name]]
        assert schema.STREAM_INDEX[st.name] == st.label
        assert (row.default_product, row.units, row.level, row.lo, row.hi) == (
            st.default_product, st.units, st.level, st.lo, st.hi)
        rule = ev.RULES[st.name]
        assert (rule.kind, rule.level) == (st.aggregation, st.level)
        # the evaluated output series sum exactly the model outputs the loss compares
        assert [o for n in rule.series for o in SERIES_BY_NAME[n].sources] == list(st.outputs)
        assert set(st.outputs) <= set(OUTPUTS)
        assert config_mod.DEFAULT_PRODUCTS[st.name] == (st.default_product if st.assimilated else None)
        cf_units.Unit(st.cf_units)  # valid UDUNITS-2 (raises otherwise)
    expected = {t.name: (st.name if st else None, t.weight) for st, t in S.terms()}
    assert list(L.TERMS.items()) == list(expected.items())
    assert list(L.TERMS)[-2:] == ["violation", "edc"]
    assert L.ANNUAL_TERMS == ("biomass", "nbe_iav", "vod")
    assert [t for t, on in L.LossConfig().enabled.items() if not on] == ["vod"]


def test_loss_does_not_import_data():
    for path in (PKG / "loss").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(m.startswith("differland_dist.data") for m in mods), (path.name, mods)


def _new_rows():
    """Two rows beyond the published 12: a pixel-level monthly stream and a patch-level annual
    stream with an extra monthly term."""
    n = len(S.STREAMS)
    return (S.Stream("gpp_copy", n, "gC m-2 d-1", -5, 50, "pixel", ("gpp",), "monthly", 2.0,
                     ("gpp_copy",)),
            S.Stream("lai_patch", n + 1, "m2 m-2", 0, 15, "patch", ("lai", "SIF"), "annual", 3.0,
                     ("lai_patch",), extra_terms=(S.Term("lai_patch_monthly", "monthly", 0.5),)))


def test_a_new_row_reaches_the_loss_and_the_evaluation(monkeypatch):
    monkeypatch.setattr(S, "STREAMS", S.STREAMS + _new_rows())
    S.check(S.STREAMS)
    cfg = L.LossConfig(warm_up=2)
    assert cfg.enabled["gpp_copy"] and cfg.weights["lai_patch"] == 3.0
    assert cfg.weights["lai_patch_monthly"] == 0.5
    outputs, sums = L.required_series(cfg)
    assert {"gpp", "lai", "SIF"} <= set(outputs)

    rng = np.random.default_rng(0)
    P, T, spy, n_patches = 6, 30, 12, 2
    series = {n: rng.uniform(0.5, 2.0, (P, T)).astype(np.float32) for n in outputs}
    totals = {n: rng.uniform(1.0, 2.0, P).astype(np.float32) for n in sums}
    pools = rng.uniform(10.0, 20.0, (P, 7)).astype(np.float32)
    labels = rng.uniform(0.5, 2.0, (P, T, 2 * len(S.STREAMS))).astype(np.float32)
    labels[..., 1::2] = (rng.uniform(size=(P, T, len(S.STREAMS))) > 0.2)
    patch = np.array([0, 0, 0, 1, 1, 1], np.int32)
    valid = np.array([1, 1, 0, 1, 1, 1], np.float32)
    out = L.loss_terms({k: jnp.asarray(v) for k, v in series.items()},
                       {k: jnp.asarray(v) for k, v in totals.items()}, jnp.asarray(pools),
                       Labels.from_published(jnp.asarray(labels)), jnp.asarray(patch),
                       jnp.asarray(valid), n_patches, cfg)
    assert list(out)[-2:] == ["violation", "edc"]

    wu = cfg.warm_up
    g = 2 * len(S.STREAMS) - 4  # the gpp_copy pair, then lai_patch
    obs, w = labels[:, wu:, g].astype(np.float64), labels[:, wu:, g + 1] * valid[:, None]
    ref = np.sum((series["gpp"][:, wu:] - obs) ** 2 * w) * 2.0
    np.testing.assert_allclose(float(out["gpp_copy"]), ref, rtol=1e-5)

    def patch_error(pred, o, ww):
        def pmean(x):
            return np.stack([(x * valid[:, None])[patch == k].sum(0) / valid[patch == k].sum()
                             for k in range(n_patches)])
        return np.sum((pmean(pred * ww) - pmean(o * ww)) ** 2 * pmean(ww))

    model = (series["lai"] + series["SIF"])[:, wu:].astype(np.float64)
    obs, w = labels[:, wu:, g + 2].astype(np.float64), labels[:, wu:, g + 3] * valid[:, None]
    Y = (T - wu) // spy
    ann = [a[:, : Y * spy].reshape(P, Y, spy) for a in (model, obs, w)]
    ref_annual = patch_error(ann[0].mean(2), ann[1].mean(2), ann[2].prod(2)) * 3.0
    np.testing.assert_allclose(float(out["lai_patch"]), ref_annual, rtol=1e-4)
    np.testing.assert_allclose(float(out["lai_patch_monthly"]), patch_error(model, obs, w) * 0.5,
                               rtol=1e-4)

    rules = ev.rules()
    assert rules["gpp_copy"] == ev.Rule("gpp_copy", ("gpp",), "monthly", "pixel")
    assert rules["lai_patch"] == ev.Rule("lai_patch", ("lai", "sif"), "annual", "patch")
    assert list(rules)[-2:] == ["gpp_copy", "lai_patch"]


@pytest.mark.parametrize("change", [{"aggregation": "weekly"}, {"level": "region"},
                                    {"outputs": ()}, {"label": 12}, {"lo": 20.0}])
def test_inconsistent_tables_are_refused(change):
    bad = S.STREAMS[0]._replace(**change)
    with pytest.raises(ValueError, match="streams: "):
        S.check((bad, *S.STREAMS[1:]))
