"""Write complete DeepSeek-VL checkpoint folders with random weights.

The folders use the original on-disk layout (config.json with ``cls`` +
``params`` parts, processor/preprocessor configs, a byte-level BPE
tokenizer built locally with ``tokenizers``, safetensors weights under the
original key names, optionally sharded or as ``.bin``). Tests load them
through the real loader; benchmarks use the full 1.3B size.

``size="tiny"`` describes small towers through extra keys in the vision
``params``; ``size="full"`` writes exactly upstream's config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import original_key
from ..spec import read_spec

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
IMAGE_TAG = "<image_placeholder>"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
HALF = [0.5, 0.5, 0.5]
SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language."
)
# Text the tiny tokenizer is trained on: enough for common English pieces.
_CORPUS = [
    "User: Describe this image in detail.\n\nAssistant: The image shows a dog on a green field.",
    "You are a helpful language and vision assistant. You are able to understand the visual content.",
    "What is in the picture? A cat, a table, two chairs and the sky. Hello world! Numbers 0123456789.",
    "def main():\n    print('hello')\n\n| a | b |\n|---|---|\n- item one\n- item two\n```python\nx = 1\n```",
]


def _special_tokens(first_id: int) -> list[str]:
    # Upstream: BOS at 100000, EOS at 100001, reserved tokens, the image tag at 100015.
    reserved = [f"<｜reserved_{i}｜>" for i in range(13)]
    return [BOS, EOS, *reserved, IMAGE_TAG]


def write_tokenizer(folder: Path, *, base_vocab: int) -> dict[str, int]:
    """Byte-level BPE like upstream's; special tokens start at id ``base_vocab``.

    Returns the special tokens' ids, plus ``"<trained>"``: how many entries are real BPE tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=min(base_vocab, 600), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    trainer_tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    model_json = json.loads(trainer_tok.to_str())["model"]
    vocab: dict[str, int] = model_json["vocab"]
    merges: list[tuple[str, str]] = []
    for merge in model_json["merges"]:  # "a b" in older tokenizers, ["a", "b"] in newer ones
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        merges.append((left, right))
    trained = len(vocab)
    # Filler entries no merge can reach pad the vocabulary to upstream's size.
    for i in range(len(vocab), base_vocab):
        vocab[f"<filler_{i}>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = _special_tokens(base_vocab)
    tok.add_special_tokens(specials)
    tok.save(str(folder / "tokenizer.json"))
    ids: dict[str, int] = {}
    for token in specials:
        token_id = tok.token_to_id(token)
        assert token_id is not None, token  # added just above
        ids[token] = token_id
    assert ids[BOS] == base_vocab and ids[IMAGE_TAG] == base_vocab + 15, ids
    ids["<trained>"] = trained

    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": BOS, "eos_token": EOS,
        "clean_up_tokenization_spaces": False, "legacy": True, "model_max_length": 16384,
        "pad_token": None, "tokenizer_class": "LlamaTokenizer", "unk_token": None, "use_default_system_prompt": False,
    }, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "additional_special_tokens": [IMAGE_TAG], "bos_token": BOS, "eos_token": EOS, "pad_token": EOS,
    }, indent=2))
    return ids


def checkpoint_configs(tower: str, size: str) -> dict[str, Any]:
    """The config.json, preprocessor and processor configs of a ``tower`` checkpoint: upstream's (``full``) or tiny."""
    full = size == "full"
    if tower == "siglip":
        vision_params: dict[str, Any] = {
            "image_size": 384, "model_name": "siglip_large_patch16_384", "select_feature": "same", "select_layer": -1,
        }
        if not full:
            vision_params.update(image_size=32, patch_size=8, width=32, layers=2, heads=2, mlp_ratio=4)
        vision = {"cls": "CLIPVisionTower", "model_type": "vision", "params": vision_params}
        aligner_params = {"depth": 2, "input_dim": 1024 if full else 32, "n_embed": 2048 if full else 64,
                          "projector_type": "mlp_gelu"}
        language = {
            "hidden_size": 2048, "intermediate_size": 5632, "max_position_embeddings": 16384, "model_type": "llama",
            "num_attention_heads": 16, "num_hidden_layers": 24, "num_key_value_heads": 16, "torch_dtype": "bfloat16",
            "vocab_size": 102400,
        }
        preprocessor: dict[str, Any] = {"image_size": 384 if full else 32, "do_normalize": True, "image_mean": HALF,
                                        "image_std": HALF}
        image_tokens = 576 if full else 16
    else:
        high = {
            "ckpt_path": "", "image_size": 1024, "model_name": "sam_b_downsample", "output_dim": 1024,
            "pixel_mean": CLIP_MEAN, "pixel_std": CLIP_STD, "select_feature": "same", "select_layer": -1,
        }
        low = {
            "ckpt_path": "", "image_size": 384, "model_name": "siglip_large_patch16_384", "output_dim": 1024,
            "pixel_mean": HALF, "pixel_std": HALF, "select_feature": "same", "select_layer": -1,
        }
        if not full:
            high.update(image_size=64, patch_size=8, width=32, layers=2, heads=2, window_size=4,
                        global_attn_indexes=[1], out_chans=16, downsample_channels=[32, 64], resample_size=16,
                        output_dim=64)
            low.update(image_size=32, patch_size=8, width=64, layers=2, heads=4, mlp_ratio=4, output_dim=64)
        vision = {"cls": "HybridVisionTower", "model_type": "vision", "params": {
            "concat_type": "tuple", "freeze_high": True, "freeze_low": True, "high_res_cfg": high, "low_res_cfg": low,
        }}
        aligner_params = {"depth": 2, "input_dim": 1024 if full else 64, "n_embed": 4096 if full else 64,
                          "projector_type": "low_high_hybrid_split_mlp_gelu"}
        language = {"max_position_embeddings": 16384, "model_type": "llama", "num_hidden_layers": 30,
                    "torch_dtype": "float16", "vocab_size": 102400}
        preprocessor = {"image_size": 1024 if full else 64, "do_normalize": False, "image_mean": CLIP_MEAN,
                        "image_std": CLIP_STD}
        image_tokens = 576 if full else 16
    if not full:
        language = {"hidden_size": 64, "intermediate_size": 128, "max_position_embeddings": 16384,
                    "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 4,
                    "vocab_size": 1024}
    preprocessor.update({
        "background_color": [127, 127, 127], "image_processor_type": "VLMImageProcessor", "min_size": 14,
        "processor_class": "VLChatProcessor", "rescale_factor": 0.00392156862745098,
    })
    return {
        "config": {
            "aligner_config": {"cls": "MlpProjector", "model_type": "aligner", "params": aligner_params},
            "architectures": ["MultiModalityCausalLM"], "language_config": language, "model_type": "multi_modality",
            "torch_dtype": "bfloat16", "transformers_version": "4.38.2", "vision_config": vision,
        },
        "preprocessor": preprocessor,
        "processor": {"add_special_token": False, "ignore_id": -100, "image_tag": IMAGE_TAG, "mask_prompt": True,
                      "num_image_tokens": image_tokens, "processor_class": "VLChatProcessor", "sft_format": "deepseek"},
    }


def _unused_heads(spec, shapes: dict[str, tuple[int, ...]]) -> None:
    """The tensors upstream checkpoints carry but never use (see checkpoint.IGNORED_KEYS)."""
    towers = (["vision_model.vision_tower_low.vision_tower."] if spec.vision.kind == "hybrid"
              else ["vision_model.vision_tower."])
    width = spec.vision.low.width
    hidden = int(width * spec.vision.low.mlp_ratio)
    for prefix in towers:
        p = prefix + "attn_pool."
        shapes.update({
            p + "latent": (1, 1, width), p + "q.weight": (width, width), p + "q.bias": (width,),
            p + "kv.weight": (2 * width, width), p + "kv.bias": (2 * width,), p + "proj.weight": (width, width),
            p + "proj.bias": (width,), p + "norm.weight": (width,), p + "norm.bias": (width,),
            p + "mlp.fc1.weight": (hidden, width), p + "mlp.fc1.bias": (hidden,),
            p + "mlp.fc2.weight": (width, hidden), p + "mlp.fc2.bias": (width,),
        })
    if spec.vision.kind == "hybrid":
        for side in ("high", "low"):
            dim = spec.vision.high.out_dim if side == "high" else width
            shapes[f"vision_model.{side}_layer_norm.weight"] = (dim,)
            shapes[f"vision_model.{side}_layer_norm.bias"] = (dim,)


def random_init(name: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(mean, standard deviation) of the random weight ``name``: a constant where the deviation is 0.

    Shared with the GPU check, which fills a model built in GPU memory the same way.
    """
    if name.endswith("hd_alpha_downsamples"):
        return 0.7, 0.0  # non-zero so the high-res path matters
    if "norm" in name and name.endswith("weight") and len(shape) == 1:
        return 1.0, 0.1
    if name.endswith("bias"):
        return 0.0, 0.02
    fan_in = 1
    for d in shape[1:]:
        fan_in *= d
    scale = 1.0 if len(shape) < 2 or "embed_tokens" in name else fan_in ** -0.5
    if "pos_embed" in name or "rel_pos" in name:
        scale = 0.1
    return 0.0, scale


def _random_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    mean, std = random_init(name, shape)
    if std == 0.0:
        return torch.full(shape, mean, dtype=dtype)
    return (mean + std * torch.randn(shape, generator=gen)).to(dtype)


def write_checkpoint(
    folder: str | Path,
    *,
    tower: str = "siglip",
    size: str = "tiny",
    shards: int = 1,
    weights_format: str = "safetensors",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    lm_layers: int | None = None,
) -> Path:
    """Write a complete checkpoint folder and return its path."""
    from safetensors.torch import save_file

    from ..model import DeepSeekVLModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = checkpoint_configs(tower, size)
    if lm_layers is not None:  # a shallower language model, for quick benchmark runs
        cfg["config"]["language_config"]["num_hidden_layers"] = lm_layers
    (folder / "config.json").write_text(json.dumps(cfg["config"], indent=2))
    (folder / "preprocessor_config.json").write_text(json.dumps(cfg["preprocessor"], indent=2))
    (folder / "processor_config.json").write_text(json.dumps(cfg["processor"], indent=2))
    base_vocab = 100000 if size == "full" else 900
    trained_vocab = write_tokenizer(folder, base_vocab=base_vocab)["<trained>"]

    spec = read_spec(folder)
    with torch.device("meta"):
        shapes = {original_key(k): tuple(v.shape) for k, v in DeepSeekVLModel(spec, dtype).state_dict().items()}
    _unused_heads(spec, shapes)
    gen = torch.Generator().manual_seed(seed)
    tensors = {name: _random_tensor(name, shape, gen, dtype) for name, shape in sorted(shapes.items())}
    # Random weights would often pick special tokens (ending answers at once)
    # or filler entries (text that re-tokenizes into many tokens, unlike a real
    # model's); zeroing their output rows keeps answers to real tokens. Tests
    # that need an EOS raise that row themselves.
    tensors["language_model.lm_head.weight"][trained_vocab:] = 0

    if weights_format == "bin":
        torch.save(tensors, folder / "pytorch_model.bin")
        return folder
    if shards <= 1:
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder
    names = list(tensors)
    weight_map: dict[str, str] = {}
    for i in range(shards):
        part = names[i::shards]
        file_name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in part}, str(folder / file_name), metadata={"format": "pt"})
        weight_map.update({n: file_name for n in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )
    return folder


def random_engine(folder: Path, *, tower: str, size: str, device: str, dtype: str, seed: int = 0,
                  quantize: str = "none", max_batch: int = 1):
    """An ``Engine`` for a full-size (or tiny) architecture with random weights made in place on ``device``.

    Only the configs and the tokenizer are written to ``folder``; the
    weights never touch the disk (the 7B's 14 GB would not fit the time).
    Tensors are made one at a time, and with ``quantize`` each language-model
    layer is quantized as soon as its weights are made (as ``engine.load``
    does while reading them), so the unquantized model never sits in memory.
    ``max_batch``: as ``engine.load``'s.
    """
    from ..checkpoint import _assign
    from ..engine import DEFAULT_CONTEXT_LENGTH, Engine
    from ..images import ImagePreprocessor
    from ..model import DeepSeekVLModel, _materialise_derived_buffers
    from ..prompt import PromptFormat
    from ..quantize import LayerQuantizer
    from ..resolve import pick_device, pick_dtype
    from ..types import EngineInfo

    folder.mkdir(parents=True, exist_ok=True)
    configs = checkpoint_configs(tower, size)
    for name, key in (("config.json", "config"), ("preprocessor_config.json", "preprocessor"),
                      ("processor_config.json", "processor")):
        (folder / name).write_text(json.dumps(configs[key], indent=2))
    trained = write_tokenizer(folder, base_vocab=100000 if size == "full" else 900)["<trained>"]
    spec = read_spec(folder)
    chosen_device, chosen_dtype = pick_device(device), pick_dtype(dtype, pick_device(device))
    with torch.device("meta"):
        model = DeepSeekVLModel(spec, chosen_dtype)
    quantizer = LayerQuantizer.for_load(quantize, spec, chosen_device, chosen_dtype)
    generator = torch.Generator(device=chosen_device).manual_seed(seed)
    with torch.no_grad():
        for name, meta in [*model.named_parameters(), *model.named_buffers()]:
            tensor = torch.empty(meta.shape, dtype=meta.dtype, device=chosen_device)
            if tensor.is_floating_point():
                mean, std = random_init(name, tuple(tensor.shape))
                if std == 0.0:
                    tensor.fill_(mean)
                else:
                    tensor.normal_(mean, std, generator=generator)
            if name == "language_model.lm_head.weight":
                tensor[trained:] = 0  # answers stay within real tokens, as in write_checkpoint's
            _assign(model, name, tensor)
            del tensor
            quantizer.assigned(model, name)
    _materialise_derived_buffers(model, chosen_device)
    model.eval()
    info = EngineInfo(model_id=f"random {size} {tower}", variant="chat", tower=spec.vision.kind,
                      device=str(chosen_device),
                      dtype=str(chosen_dtype).replace("torch.", ""), parameters=model.parameter_count(),
                      context_length=DEFAULT_CONTEXT_LENGTH, path=str(folder),
                      quantize=quantizer.plan.mode, quantize_note=quantizer.note())
    return Engine(model, PromptFormat(folder, spec, variant="chat"), ImagePreprocessor.from_config(spec.preprocessor),
                  info, DEFAULT_CONTEXT_LENGTH, max_batch=max_batch)
