"""Loading tests: ``engine.load`` on real tiny checkpoints written to disk.

Nothing here is stubbed: every test writes (or copies and damages) a complete
checkpoint folder in the original DeepSeek-VL layout with
``engine.testing.random_checkpoints.write_checkpoint`` and goes through the real resolver, spec
reader and weight loader. Hub ids are resolved offline from a Hugging Face
cache built by hand; those cases run in a subprocess because huggingface_hub
reads ``HF_HOME`` and ``HF_HUB_OFFLINE`` when it is imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from process_support import PROCESS_TIMEOUT
from safetensors.torch import load_file, save_file

import engine
from engine.checkpoint import IGNORED_KEYS, LoadProgress, original_key
from engine.spec import read_spec
from engine.testing.random_checkpoints import write_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
HUB_ID = "deepseek-ai/deepseek-vl-1.3b-chat"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
HELLO = [engine.Message("user", "hello")]


# --- helpers ----------------------------------------------------------------


def _ignored(key: str) -> bool:
    return any(p.search(key) for p in IGNORED_KEYS)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message and "\r" not in message, repr(message)
    return message


def _copy(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    return dest


def _logits(eng) -> torch.Tensor:
    return eng.logits(eng.prepare(HELLO))


# --- checkpoints, each written once per module -------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """``checkpoint(tower, shards=1, weights_format="safetensors")`` -> a tiny checkpoint folder (seed 0).

    Folders are shared by the whole module: copy one before changing it.
    """
    made: dict[tuple, Path] = {}

    def get(tower: str = "siglip", shards: int = 1, weights_format: str = "safetensors") -> Path:
        key = (tower, shards, weights_format)
        if key not in made:
            parent = tmp_path_factory.mktemp("ckpt")
            made[key] = write_checkpoint(
                parent / f"tiny-{tower}-{weights_format}-{shards}", tower=tower, shards=shards,
                weights_format=weights_format, seed=0,
            )
        return made[key]

    return get


@pytest.fixture(scope="module")
def loaded(checkpoint):
    """``loaded(tower)`` -> the Engine of the single-file safetensors checkpoint, on CPU."""
    engines: dict[str, object] = {}

    def get(tower: str = "siglip"):
        if tower not in engines:
            engines[tower] = engine.load(str(checkpoint(tower)), device="cpu")
        return engines[tower]

    return get


# --- 1. tiny checkpoints load, and Engine.info describes them ---------------------


@pytest.mark.parametrize("tower", ["siglip", "hybrid"])
def test_tiny_checkpoint_loads_with_info(loaded, checkpoint, tower):
    eng = loaded(tower)
    info = eng.info
    assert info.model_id == str(checkpoint(tower))
    assert info.variant == "chat"
    assert info.tower == tower
    assert info.device == "cpu"
    assert info.dtype == "float32"
    assert info.parameters == sum(p.numel() for p in eng.model.parameters()) > 0
    assert info.context_length == eng.context_length == 4096
    assert info.path == str(checkpoint(tower).resolve())
    assert info.load_seconds > 0
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in eng.model.parameters())
    logits = _logits(eng)
    assert logits.ndim == 2 and logits.shape[1] == 1024 and torch.isfinite(logits).all()


@pytest.mark.parametrize("tower", ["siglip", "hybrid"])
def test_read_spec_of_tiny_checkpoint(checkpoint, tower):
    spec = read_spec(checkpoint(tower))
    assert spec.vision.kind == tower
    assert spec.num_image_tokens == spec.vision.num_tokens == 16
    assert (spec.vision.high is not None) == (tower == "hybrid")


def test_custom_context_length_is_honoured(checkpoint):
    eng = engine.load(str(checkpoint()), device="cpu", context_length=1234)
    assert eng.info.context_length == eng.context_length == 1234


def test_auto_device_and_dtype(checkpoint):
    eng = engine.load(str(checkpoint()))
    if torch.cuda.is_available():
        expected = ("cuda", {"bfloat16", "float16"})
    elif torch.backends.mps.is_available():
        expected = ("mps", {"float16"})
    else:
        expected = ("cpu", {"float32"})
    assert eng.info.device.split(":")[0] == expected[0]
    assert eng.info.dtype in expected[1]


@pytest.mark.parametrize("dtype", ["bfloat16", "bf16", torch.bfloat16])
def test_bfloat16_load(checkpoint, dtype):
    folder = checkpoint()
    eng = engine.load(str(folder), device="cpu", dtype=dtype)
    assert eng.info.dtype == "bfloat16"
    params = dict(eng.model.named_parameters())
    assert params and all(p.dtype == torch.bfloat16 for p in params.values())
    on_file = load_file(str(folder / "model.safetensors"))
    for name, param in params.items():
        assert torch.equal(param, on_file[original_key(name)].to(torch.bfloat16)), name
    assert torch.isfinite(_logits(eng)).all()


@pytest.mark.parametrize("name", ["tiny-base", "tiny_base", "deepseek-vl-1.3b-base"])
def test_base_folder_name_gives_base_variant(checkpoint, tmp_path, name):
    folder = _copy(checkpoint(), tmp_path / name)
    assert engine.load(str(folder), device="cpu").info.variant == "base"
    assert engine.load(str(folder), device="cpu", variant="chat").info.variant == "chat"


def test_parent_directory_name_does_not_change_variant(checkpoint, tmp_path):
    folder = _copy(checkpoint(), tmp_path / "knowledge_base" / "deepseek-vl-1.3b-chat")
    assert engine.load(str(folder), device="cpu").info.variant == "chat"


# --- 2. sharded and .bin weights give the same model -----------------------------


@pytest.mark.parametrize("tower", ["siglip", "hybrid"])
@pytest.mark.parametrize("shards, weights_format", [(3, "safetensors"), (1, "bin")])
def test_sharded_and_bin_give_same_logits(checkpoint, loaded, tower, shards, weights_format):
    folder = checkpoint(tower, shards=shards, weights_format=weights_format)
    if weights_format == "bin":
        assert (folder / "pytorch_model.bin").exists() and not list(folder.glob("*.safetensors"))
    else:
        assert len(list(folder.glob("model-*-of-00003.safetensors"))) == 3
        assert (folder / "model.safetensors.index.json").exists() and not (folder / "model.safetensors").exists()
    eng = engine.load(str(folder), device="cpu")
    reference = loaded(tower)
    assert eng.info.parameters == reference.info.parameters
    got, want = _logits(eng), _logits(reference)
    assert torch.equal(got, want)
    for (name, a), (name_b, b) in zip(eng.model.state_dict().items(), reference.model.state_dict().items(),
                                      strict=True):
        assert name == name_b and torch.equal(a, b), name


# --- 3. every weight lands where it belongs --------------------------------------


@pytest.mark.parametrize("tower", ["siglip", "hybrid"])
def test_every_weight_lands(loaded, checkpoint, tower):
    eng = loaded(tower)
    on_file = load_file(str(checkpoint(tower) / "model.safetensors"))
    state = eng.model.state_dict()
    assert state
    for name, tensor in state.items():
        key = original_key(name)
        assert key in on_file, name
        assert tensor.dtype == on_file[key].dtype, name
        assert torch.equal(tensor, on_file[key]), name
    used = {original_key(name) for name in state}
    assert used == {k for k in on_file if not _ignored(k)}

    ignored = [k for k in on_file if _ignored(k)]
    assert any(".attn_pool." in k for k in ignored)
    if tower == "hybrid":
        assert {"vision_model.high_layer_norm.weight", "vision_model.low_layer_norm.weight"} <= set(ignored)
        # Upstream's SAM MLP names (lin1/lin2) are on file; the model calls them fc1/fc2.
        assert any(".mlp.lin1." in k for k in on_file) and any(".mlp.fc1." in k for k in state)
    model_keys = set(state) | {name for name, _ in eng.model.named_parameters()}
    for key in ignored:
        assert key not in model_keys and key not in used, key
    assert not any("attn_pool" in name for name in model_keys)


# --- 4. .bin weights never run pickled code --------------------------------------


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("zipfile_format", [True, False], ids=["zip", "legacy"])
def test_bin_with_pickled_code_is_refused(checkpoint, tmp_path, zipfile_format):
    folder = _copy(checkpoint(weights_format="bin"), tmp_path / "evil")
    marker = tmp_path / "pwned"
    weights = folder / "pytorch_model.bin"
    torch.save({"x": _Evil(marker)}, weights, _use_new_zipfile_serialization=zipfile_format)

    # The payload is armed: an unsafe load does run it.
    torch.load(weights, weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(engine.CheckpointError) as exc:
        engine.load(str(folder), device="cpu")
    assert str(weights) in _one_line(exc)
    assert not marker.exists()


# --- 5. bad inputs: the right error, one line, naming the problem ---------------------


@pytest.mark.parametrize("model", ["/nonexistent/model", "./nope", "nope", "a/b/c"])
def test_missing_folder(tmp_path, monkeypatch, model):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(engine.ModelNotFoundError, match="model folder not found: " + re.escape(model)) as exc:
        engine.load(model)
    _one_line(exc)


def test_file_instead_of_folder(checkpoint):
    path = checkpoint() / "config.json"
    with pytest.raises(engine.ModelNotFoundError, match="is a file, not a model folder") as exc:
        engine.load(str(path))
    assert str(path) in _one_line(exc)


def test_missing_folder_of_unknown_user():
    with pytest.raises(engine.ModelNotFoundError, match="nosuchuser"):
        engine.load("~nosuchuser_dsvl_test/model")


def test_not_a_deepseek_vl_checkpoint(checkpoint, tmp_path):
    folder = _copy(checkpoint(), tmp_path / "llama")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(config))
    for call in (lambda: engine.load(str(folder)), lambda: read_spec(folder)):
        with pytest.raises(engine.CheckpointError,
                           match=r"not a DeepSeek-VL checkpoint.*'llama'.*multi_modality") as exc:
            call()
        assert "config.json" in _one_line(exc)


def test_empty_folder(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(engine.CheckpointError, match="missing config.json") as exc:
        engine.load(str(folder))
    assert str(folder) in _one_line(exc)


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json", "preprocessor_config.json",
                                  "model.safetensors"])
def test_missing_file(checkpoint, tmp_path, name):
    folder = _copy(checkpoint(), tmp_path / "incomplete")
    (folder / name).unlink()
    with pytest.raises(engine.CheckpointError, match="missing" if name.endswith("json") else "has no weights") as exc:
        engine.load(str(folder))
    message = _one_line(exc)
    assert name in message and str(folder) in message


def test_missing_shard(checkpoint, tmp_path):
    folder = _copy(checkpoint(shards=3), tmp_path / "sharded")
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(engine.CheckpointError,
                       match=r"missing weight shard\(s\) model-00002-of-00003\.safetensors") as exc:
        engine.load(str(folder))
    _one_line(exc)


@pytest.mark.parametrize(
    "weight_map",
    [
        pytest.param({}),
        pytest.param([]),
        "not json",
    ],
    ids=["empty-map", "list-map", "not-json"],
)
def test_broken_shard_index(checkpoint, tmp_path, weight_map):
    folder = _copy(checkpoint(shards=3), tmp_path / "sharded")
    index = folder / "model.safetensors.index.json"
    index.write_text("{not json" if weight_map == "not json" else json.dumps({"weight_map": weight_map}))
    with pytest.raises(engine.CheckpointError, match=r"model\.safetensors\.index\.json") as exc:
        engine.load(str(folder))
    _one_line(exc)


def test_unknown_vision_tower(checkpoint, tmp_path):
    folder = _copy(checkpoint(), tmp_path / "huge")
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"]["params"]["model_name"] = "siglip_huge"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(engine.CheckpointError, match="unknown vision tower 'siglip_huge'") as exc:
        engine.load(str(folder))
    _one_line(exc)


@pytest.mark.parametrize("name", ["config.json", "preprocessor_config.json", "tokenizer_config.json"])
def test_invalid_json(checkpoint, tmp_path, name):
    folder = _copy(checkpoint(), tmp_path / "broken")
    (folder / name).write_text('{"model_type": "multi_modality",')
    with pytest.raises(engine.CheckpointError, match="is not valid JSON") as exc:
        engine.load(str(folder))
    assert str(folder / name) in _one_line(exc)


def _resave(folder: Path, change) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def test_missing_key(checkpoint, tmp_path):
    folder = _copy(checkpoint(), tmp_path / "missing-key")
    _resave(folder, lambda t: t.pop("language_model.model.norm.weight"))
    with pytest.raises(engine.CheckpointError,
                       match=r"lacks weights the model needs: language_model\.model\.norm\.weight") as exc:
        engine.load(str(folder))
    _one_line(exc)


def test_missing_key_is_named_as_on_file(checkpoint, tmp_path):
    key = "vision_model.vision_tower_high.vision_tower.blocks.0.mlp.lin1.weight"
    folder = _copy(checkpoint("hybrid"), tmp_path / "missing-sam-key")
    _resave(folder, lambda t: t.pop(key))
    with pytest.raises(engine.CheckpointError,
                       match=r"lacks weights the model needs: " + key.replace(".", r"\.")) as exc:
        engine.load(str(folder))
    _one_line(exc)


def test_unexpected_key(checkpoint, tmp_path):
    folder = _copy(checkpoint(), tmp_path / "extra-key")
    _resave(folder, lambda t: t.update({"vision_model.extra.weight": torch.zeros(3)}))
    with pytest.raises(engine.CheckpointError, match=r"does not use: vision_model\.extra\.weight") as exc:
        engine.load(str(folder))
    _one_line(exc)


def test_wrong_shape(checkpoint, tmp_path):
    folder = _copy(checkpoint(), tmp_path / "bad-shape")
    _resave(folder, lambda t: t.update({"language_model.model.norm.weight": torch.ones(65)}))
    with pytest.raises(
        engine.CheckpointError,
        match=r"weight language_model\.model\.norm\.weight has shape \[65\], the config implies \[64\]",
    ) as exc:
        engine.load(str(folder))
    _one_line(exc)


@pytest.mark.parametrize(
    "cut",
    [
        "empty",
        "garbage",
        pytest.param("half"),
    ],
)
def test_damaged_safetensors(checkpoint, tmp_path, cut):
    folder = _copy(checkpoint(), tmp_path / "damaged")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"empty": b"", "garbage": b"\x10" + bytes(7) + b"not json at all!",
                         "half": data[: len(data) // 2]}[cut])
    with pytest.raises(engine.CheckpointError, match="model.safetensors") as exc:
        engine.load(str(folder))
    assert str(weights) in _one_line(exc)


def test_bin_that_is_not_a_checkpoint(checkpoint, tmp_path):
    folder = _copy(checkpoint(weights_format="bin"), tmp_path / "garbage-bin")
    weights = folder / "pytorch_model.bin"
    weights.write_bytes(b"this is not a torch file")
    with pytest.raises(engine.CheckpointError, match="cannot read") as exc:
        engine.load(str(folder))
    assert str(weights) in _one_line(exc)


@pytest.mark.parametrize("device", [
    "tpu", "", "gpu",
    pytest.param("cuda", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")),
    pytest.param("mps", marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is present")),
])
def test_unknown_device(checkpoint, device):
    with pytest.raises(engine.EngineError) as exc:
        engine.load(str(checkpoint()), device=device)
    assert "device" in _one_line(exc).lower()


@pytest.mark.parametrize("device", [
    "meta",
    pytest.param("xpu", marks=pytest.mark.skipif(hasattr(torch, "xpu") and torch.xpu.is_available(),
                                                 reason="XPU present")),
])
def test_unsupported_torch_device(checkpoint, device):
    with pytest.raises(engine.EngineError):
        engine.load(str(checkpoint()), device=device)


@pytest.mark.parametrize("dtype", ["int8", "float64", "fp8", ""])
def test_unknown_dtype(checkpoint, dtype):
    with pytest.raises(engine.EngineError, match=r"unknown dtype") as exc:
        engine.load(str(checkpoint()), device="cpu", dtype=dtype)
    _one_line(exc)


def test_non_float_torch_dtype_is_refused(checkpoint):
    with pytest.raises(engine.EngineError):
        engine.load(str(checkpoint()), device="cpu", dtype=torch.int8)


# --- 5/6. hub ids, offline, from a Hugging Face cache -------------------------------

# One subprocess (importing torch costs seconds) runs the hub cases in two
# phases: first against the empty HF_HOME, then, once the test has filled
# that cache and said "go" on stdin, against the filled one.
_HUB_SCRIPT = r"""
import json, sys
import engine
for phase, calls in enumerate(json.loads(sys.argv[1])):
    if phase:
        assert sys.stdin.readline().strip() == "go"
    out = []
    for model, kwargs in calls:
        events = []
        try:
            eng = engine.load(model, device="cpu", progress=events.append, **kwargs)
        except Exception as exc:
            out.append({"error": type(exc).__name__, "engine_error": isinstance(exc, engine.EngineError),
                        "message": str(exc)})
        else:
            out.append({"path": eng.info.path, "model_id": eng.info.model_id, "variant": eng.info.variant,
                        "tower": eng.info.tower, "stages": [e.stage for e in events]})
    print("RESULT " + json.dumps(out), flush=True)
"""


def _cache_model(hf_home: Path, repo_id: str, source: Path) -> Path:
    """Lay ``source``'s files out as huggingface_hub caches them: blobs, a snapshot of symlinks, refs/main."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for file in sorted(source.iterdir()):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, repo / "blobs" / digest)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", digest))
    return snapshot


def _read_result(proc: subprocess.Popen, stderr_path: Path) -> list[dict]:
    for line in proc.stdout:
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    proc.wait(timeout=PROCESS_TIMEOUT)
    pytest.fail(f"hub subprocess ended (rc={proc.returncode}): {stderr_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def hub_runs(checkpoint, tmp_path_factory):
    """Hub-id loads, offline, in a subprocess whose HF_HOME is empty at first, then holds HUB_ID."""
    hf_home = tmp_path_factory.mktemp("hf-home")
    stderr_path = tmp_path_factory.mktemp("hf-log") / "stderr.txt"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_")) and k not in ("TRANSFORMERS_CACHE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    phases = [
        [[HUB_ID, {}]],
        [
            [HUB_ID, {}],
            [HUB_ID, {"revision": "no-such-revision"}],
            [HUB_ID, {"revision": COMMIT}],
            ["deepseek-ai/deepseek-vl-7b-chat", {}],
        ],
    ]
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", _HUB_SCRIPT, json.dumps(phases)], env=env, cwd=REPO_ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        empty = _read_result(proc, stderr_path)
        left_in_empty = sorted(str(p.relative_to(hf_home)) for p in hf_home.rglob("*") if p.is_file())
        snapshot = _cache_model(hf_home, HUB_ID, checkpoint())
        proc.stdin.write("go\n")
        proc.stdin.flush()
        cached = _read_result(proc, stderr_path)
        assert proc.wait(timeout=PROCESS_TIMEOUT) == 0, stderr_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {"empty": empty, "cached": cached, "snapshot": snapshot, "left_in_empty": left_in_empty}


def _assert_offline_miss(result: dict, repo_id: str) -> None:
    assert result.get("error") == "ModelNotFoundError" and result["engine_error"], result
    message = result["message"]
    assert "\n" not in message
    assert repo_id in message
    assert "local Hugging Face cache" in message and "HF_HUB_OFFLINE" in message
    assert "download it once" in message and "local folder" in message


@pytest.mark.slow
def test_hub_id_offline_not_cached(hub_runs):
    (result,) = hub_runs["empty"]
    _assert_offline_miss(result, HUB_ID)
    assert not any(name.endswith((".safetensors", ".bin", ".json")) for name in hub_runs["left_in_empty"])


@pytest.mark.slow
def test_hub_id_resolved_from_cache_offline(hub_runs):
    result = hub_runs["cached"][0]
    assert "error" not in result, result
    assert os.path.realpath(result["path"]) == os.path.realpath(hub_runs["snapshot"])
    assert result["model_id"] == HUB_ID and result["variant"] == "chat" and result["tower"] == "siglip"
    assert result["stages"][0] == "download" and result["stages"][-1] == "ready" and "load" in result["stages"]


@pytest.mark.slow
def test_hub_id_revision_by_commit_offline(hub_runs):
    result = hub_runs["cached"][2]
    assert "error" not in result, result
    assert os.path.realpath(result["path"]) == os.path.realpath(hub_runs["snapshot"])


@pytest.mark.slow
def test_hub_id_unknown_revision_offline(hub_runs):
    _assert_offline_miss(hub_runs["cached"][1], HUB_ID)


@pytest.mark.slow
def test_other_hub_id_not_cached_offline(hub_runs):
    _assert_offline_miss(hub_runs["cached"][3], "deepseek-ai/deepseek-vl-7b-chat")


# --- 7. progress events ----------------------------------------------------------


def test_progress_events(checkpoint):
    events: list = []
    eng = engine.load(str(checkpoint("hybrid")), device="cpu", progress=events.append)
    assert events and all(isinstance(e, LoadProgress) for e in events)
    assert engine.LoadProgress is LoadProgress
    assert events[-1].stage == "ready" and [e.stage for e in events].count("ready") == 1
    assert events[-1].done == events[-1].total == 1
    counted = [e for e in events if e.stage == "load" and e.total is not None]
    total = len(eng.model.state_dict())
    assert counted and all(e.total == total for e in counted)
    assert [e.done for e in counted] == list(range(1, total + 1))
    assert {e.stage for e in events} <= {"load", "ready"}  # a local folder downloads nothing
    assert all(isinstance(e.message, str) and "\n" not in e.message for e in events)


# --- 8. relative paths ----------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "./"])
def test_relative_path(checkpoint, monkeypatch, prefix):
    folder = checkpoint()
    monkeypatch.chdir(folder.parent)
    eng = engine.load(prefix + folder.name, device="cpu")
    assert eng.info.path == str(folder.resolve())
    assert eng.info.model_id == prefix + folder.name
    assert eng.info.variant == "chat"


def test_relative_path_with_a_subfolder(checkpoint, monkeypatch):
    # "parent/name" has the shape of a hub id; an existing folder wins.
    folder = checkpoint()
    monkeypatch.chdir(folder.parent.parent)
    relative = f"{folder.parent.name}/{folder.name}"
    assert engine.load(relative, device="cpu").info.path == str(folder.resolve())
