"""The two encoders of the bundled model agree, and answering never needs PyTorch."""
import json
import os
import subprocess
import sys

import numpy as np

import pytest

from qa.embed import QueryEncoder, claim_encoder, get_query_encoder, int8_cache, onnx_cache, passage_encoder
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


def test_indexing_with_the_export_in_the_cache_does_not_import_torch(seeds_index, tmp_path):
    """Once the ONNX export is cached a build runs on ONNX Runtime alone: PyTorch's ~400 MB stays out."""
    corpus = tmp_path / "reports"
    corpus.mkdir()
    (corpus / "basra.txt").write_text("The Basra port handled 12 ships on Monday. Its director resigned.", "utf-8")
    code = ("import sys, json, qa; r, _ = qa.index_paths([sys.argv[1]], index=sys.argv[2]); "
            "a = qa.answer('How many ships did the Basra port handle?', index=sys.argv[2]); "
            "print(json.dumps([r.embedded_passages, a.text, 'torch' in sys.modules, "
            "'sentence_transformers' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code, str(corpus), str(tmp_path / "idx")], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ}, timeout=300)
    assert done.returncode == 0, done.stderr
    embedded, text, torch_loaded, st_loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert embedded == 1 and "12 ships" in text
    assert not torch_loaded and not st_loaded


def test_the_int8_encoder_is_made_from_the_onnx_export_alone(embedder, settings, tmp_path):
    """A cache holding only the float export yields the same int8 model as one made through PyTorch."""
    import shutil

    shutil.copy(onnx_cache(settings.model, settings.model_cache), onnx_cache(settings.model, tmp_path))
    light = get_query_encoder(settings.model, tmp_path)
    assert isinstance(light, QueryEncoder)
    int8 = passage_encoder(light, tmp_path, "int8")
    assert int8_cache(settings.model, tmp_path).exists() and int8 is not light
    text = (SEEDS / "000_e8572f977ee04a7c.txt").read_text(encoding="utf-8")
    passages = [text[i:i + 600] for i in range(0, len(text), 600)]
    reference = passage_encoder(embedder, settings.model_cache, "int8")
    np.testing.assert_allclose(int8.encode(passages, batch_size=16), reference.encode(passages, batch_size=16),
                               atol=1e-5)


def test_one_forward_pass_gives_the_passage_vector_and_one_per_sentence(embedder):
    text = ("Oil prices rose by 3% on Monday after OPEC cut output. The central bank kept its rate at 4.5%. "
            "Fans queued for hours to buy tickets for the final.")
    cuts = [(0, 54), (55, 95), (96, len(text))]
    whole, (per_sentence,) = embedder.encode_with_spans([text], [cuts])
    assert np.allclose(whole, embedder.encode([text]), atol=1e-5), "the passage vector is encode()'s"
    assert per_sentence.shape == (3, embedder.dim)
    assert np.allclose(np.linalg.norm(per_sentence, axis=1), 1.0, atol=1e-5)
    alone = embedder.encode([text[s:e] for s, e in cuts])
    sims = per_sentence @ alone.T
    # each sentence embedded on its own finds its own pooled vector first (pooled vectors also
    # share their passage's context, which the index takes partly out: Settings.sentence_context)
    assert list(sims.argmax(axis=0)) == [0, 1, 2], sims


def test_the_int8_passage_encoder_stays_close_to_the_float_model(embedder, tmp_path):
    """Passages are embedded by the int8 form of the model (twice as fast); it must stay the same model."""
    int8 = passage_encoder(embedder, tmp_path, "int8")  # an empty cache: exported and quantized here
    assert int8_cache(embedder.name, tmp_path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([onnx_cache(embedder.name, tmp_path).name,
                                                                 int8_cache(embedder.name, tmp_path).name])
    assert passage_encoder(embedder, tmp_path, "int8") is int8, "quantized once a process"
    text = (SEEDS / "000_e8572f977ee04a7c.txt").read_text(encoding="utf-8")
    passages = [text[i:i + 600] for i in range(0, len(text), 600)]
    a, b = int8.encode(passages, batch_size=16), embedder.encode(passages)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    cos = (a * b).sum(axis=1)
    assert cos.min() > 0.97 and cos.mean() > 0.99, cos
    assert passage_encoder(embedder, tmp_path, "fp32") is embedder
    with pytest.raises(ValueError, match="QA_PASSAGE_PRECISION"):
        passage_encoder(embedder, tmp_path, "int4")


def test_draft_sentences_are_embedded_by_the_int8_encoder_on_one_thread(embedder, tmp_path):
    """The verifier embeds a draft's sentences with the int8 model on one core while spaCy parses them
    on the other: the vectors stay the model's, and without an int8 file the float encoder is used."""
    from qa.cite import embed_and_parse
    from qa.settings import Settings

    assert claim_encoder(embedder, tmp_path) is embedder  # no index built here yet: nothing quantized
    passage_encoder(embedder, tmp_path, "int8")
    claims = claim_encoder(embedder, tmp_path)
    assert isinstance(claims, QueryEncoder) and claims is not embedder
    assert claim_encoder(embedder, tmp_path) is claims, "loaded once a process"
    assert claim_encoder(embedder, tmp_path, "fp32") is embedder  # float passages, float claims
    sentences = ["Hadi al-Amiri leads the Badr Organization.", "Qais al-Khazali did not call for disbandment.",
                 "Across the world, more than 6,000 cases were recorded in 58 countries."]
    cos = (claims.encode(sentences) * embedder.encode(sentences)).sum(axis=1)
    assert cos.min() > 0.97, cos
    vectors, docs = embed_and_parse(sentences, embedder, Settings.from_env(model_cache=tmp_path))
    assert [d.text for d in docs] == sentences and vectors.shape == (3, embedder.dim)
    np.testing.assert_allclose(vectors, claims.encode(sentences), atol=1e-6)
