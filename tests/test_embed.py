"""The two encoders of the bundled model agree, and answering never needs PyTorch."""
import json
import os
import subprocess
import sys

import numpy as np

from qa.embed import QueryEncoder, get_query_encoder, onnx_cache
from tests.conftest import ROOT, SEEDS


def test_onnx_query_encoder_matches_sentence_transformers(embedder, seeds_index, settings):
    target = onnx_cache(settings.model, settings.model_cache)
    assert target.exists(), "indexing leaves the ONNX export in the shared model cache"
    assert not (seeds_index.parent / ".models").exists(), "no export beside the index"
    light = get_query_encoder(settings.model, settings.model_cache)
    assert isinstance(light, QueryEncoder) and light.dim == embedder.dim == 384
    text = (SEEDS / "000_e8572f977ee04a7c.txt").read_text(encoding="utf-8")
    samples = ["Who will be the spokesperson of the new political alliance?", "P.M.F.", text[:3000],
               "Kata’ib Hezbollah and Asa’ib Ahl al-Haq", "x" * 5000]
    a, b = light.encode(samples), embedder.encode(samples)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert (a * b).sum(axis=1).min() > 0.9999


def test_answering_from_a_built_index_does_not_import_torch(seeds_index):
    code = ("import sys, json, qa; a = qa.answer('Who will be the spokesperson of the new political alliance?', "
            f"index={str(seeds_index)!r}); print(json.dumps([a.text, 'torch' in sys.modules, "
            "'sentence_transformers' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ}, timeout=300)
    assert done.returncode == 0, done.stderr
    text, torch_loaded, st_loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Ahmed al-Asadi" in text and "[1]" in text
    assert not torch_loaded and not st_loaded
