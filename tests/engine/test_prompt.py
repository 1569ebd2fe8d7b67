"""Prompts are built exactly as upstream DeepSeek-VL builds them."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

import engine
from engine.testing.random_checkpoints import BOS, EOS, IMAGE_TAG, SYSTEM_PROMPT

RED = Image.new("RGB", (40, 20), "red")
BLUE = Image.new("RGB", (20, 40), "blue")


@pytest.fixture(scope="module")
def folder(tiny_siglip):
    return tiny_siglip


@pytest.fixture(scope="module")
def chat(folder):
    return engine.load(str(folder))


def test_single_turn_no_image(chat):
    prepared = chat.prepare([engine.Message("user", "  Hello  ")])
    assert prepared.prompt == f"{SYSTEM_PROMPT}\n\nUser: Hello\n\nAssistant:"
    assert prepared.images == []


def test_single_turn_several_images_in_attach_order(chat):
    prepared = chat.prepare([engine.Message("user", "Compare them.", images=[RED, BLUE])])
    assert prepared.prompt == f"{SYSTEM_PROMPT}\n\nUser: {IMAGE_TAG}{IMAGE_TAG}Compare them.\n\nAssistant:"
    assert len(prepared.images) == 2
    # Attach order: the first slot holds the red (wide) picture, padded top and bottom.
    assert prepared.images[0][0, 0, 0] != prepared.images[0][0, 16, 16]
    assert prepared.image_keys[0] != prepared.image_keys[1]


def test_multi_turn(chat):
    messages = [
        engine.Message("user", "Hi", images=[RED]),
        engine.Message("assistant", "Hello! "),
        engine.Message("user", "Again?"),
    ]
    prepared = chat.prepare(messages)
    assert prepared.prompt == (
        f"{SYSTEM_PROMPT}\n\nUser: {IMAGE_TAG}Hi\n\nAssistant: Hello!{EOS}User: Again?\n\nAssistant:"
    )


def test_history_ending_with_an_answer_has_no_open_turn(chat):
    prepared = chat.prepare([engine.Message("user", "Hi"), engine.Message("assistant", "Yo")])
    assert prepared.prompt.endswith(f"User: Hi\n\nAssistant: Yo{EOS}")


def test_custom_and_empty_system_prompt(chat):
    assert (chat.prepare([engine.Message("user", "Hi")], system="Be brief.").prompt
            == "Be brief.\n\nUser: Hi\n\nAssistant:")
    assert chat.prepare([engine.Message("user", "Hi")], system="").prompt == "User: Hi\n\nAssistant:"


def _upstream_ids(chat, prompt: str) -> list[int]:
    """Upstream's way: tokenize the whole prompt string, then expand each image tag."""
    fmt = chat.prompt_format
    ids = [fmt.bos_id]
    for token in fmt.tokenizer.encode(prompt, add_special_tokens=False).ids:
        ids += [token] * fmt.num_image_tokens if token == fmt.image_id else [token]
    return ids


@pytest.mark.parametrize(
    "messages",
    [
        [engine.Message("user", "Describe the picture, please.")],
        [engine.Message("user", "What about these?", images=[RED, BLUE])],
        [engine.Message("user", "Hi", images=[RED]), engine.Message("assistant", "A red box."),
         engine.Message("user", " More ")],
    ],
)
def test_ids_equal_whole_string_tokenization(chat, messages):
    prepared = chat.prepare(messages)
    assert prepared.input_ids.tolist() == _upstream_ids(chat, prepared.prompt)


def test_special_token_ids_come_from_the_tokenizer_files(chat, folder):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    fmt = chat.prompt_format
    assert (fmt.bos_id, fmt.eos_id, fmt.image_id) == (tok.token_to_id(BOS), tok.token_to_id(EOS),
                                                      tok.token_to_id(IMAGE_TAG))
    prepared = chat.prepare([engine.Message("user", "x", images=[RED, BLUE])])
    ids = prepared.input_ids
    assert ids[0] == fmt.bos_id
    assert int((ids == fmt.image_id).sum()) == 2 * fmt.num_image_tokens == 2 * 16


def test_typed_image_tag_is_text_not_an_image_slot(chat):
    prepared = chat.prepare([engine.Message("user", f"What does {IMAGE_TAG} mean? {EOS}")])
    fmt = chat.prompt_format
    ids = prepared.input_ids
    assert int((ids == fmt.image_id).sum()) == 0
    assert int((ids == fmt.eos_id).sum()) == 0
    assert prepared.images == []
    text = fmt.tokenizer.decode(ids.tolist(), skip_special_tokens=False)
    assert IMAGE_TAG in text and EOS in text


def test_base_checkpoint_uses_plain_completion(folder, tmp_path):
    base = tmp_path / "tiny-base"
    shutil.copytree(folder, base)
    eng = engine.load(str(base))
    assert eng.info.variant == "base"
    prepared = eng.prepare([engine.Message("user", "The capital of France is", images=[RED])])
    assert prepared.prompt == f"{IMAGE_TAG}The capital of France is"
    assert prepared.input_ids[0] == eng.prompt_format.bos_id
    assert eng.prompt_format.stop_strings == ()


def test_prepare_needs_messages(chat):
    with pytest.raises(ValueError):
        chat.prepare([])
    with pytest.raises(ValueError):
        engine.Message("system", "x")


def test_input_ids_are_one_dimensional_long(chat):
    ids = chat.prepare([engine.Message("user", "hi")]).input_ids
    assert ids.dim() == 1 and ids.dtype == torch.long
