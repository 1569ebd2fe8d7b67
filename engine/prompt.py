"""Conversation -> token ids, exactly as upstream DeepSeek-VL builds them.

Upstream's ``deepseek`` format::

    {system}\\n\\nUser: {images}{text}\\n\\nAssistant: {answer}<｜end▁of▁sentence｜>User: ...\\n\\nAssistant:

each message's content stripped, the whole prompt stripped, BOS first, and
each ``<image_placeholder>`` expanded to ``num_image_tokens`` image tokens.

Upstream tokenizes the prompt string in one go; the tokenizer first splits
it at special tokens and encodes the runs between them independently. We
build those runs directly: template special tokens (the end-of-sentence
separator) and image slots are emitted as ids, and the text runs between
them are encoded by a copy of the tokenizer that knows no special tokens.
The ids are the same as upstream's, except that text a user types, such as
a literal ``<image_placeholder>``, stays text and never becomes a special
token or an image slot.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError
from .files import UnusableFileError, read_regular
from .spec import MAX_TOKENIZER_BYTES, ModelSpec
from .token_chars import max_token_chars

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language."
)
ROLE_NAMES = {"user": "User", "assistant": "Assistant"}
USER_SEP = "\n\n"
STOP_STRING = "User:"


@dataclass(frozen=True)
class ImageSlot:
    index: int  # position in the prompt's image list


@dataclass(frozen=True)
class SpecialToken:
    token_id: int
    text: str


Piece = str | ImageSlot | SpecialToken


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class PromptFormat:
    """Renders messages in upstream's format and encodes them to ids."""

    def __init__(self, folder: Path, spec: ModelSpec, *, variant: str = "chat"):
        from tokenizers import Tokenizer

        path = folder / "tokenizer.json"
        try:
            # Read once, only from a regular file of bounded size (a FIFO here once hung the loader).
            text = read_regular(path, MAX_TOKENIZER_BYTES).decode("utf-8")
            self.tokenizer = Tokenizer.from_str(text)
            raw = json.loads(text)
            raw["added_tokens"] = []
            # The same without added tokens: text runs never turn into special tokens (specials are pieces of their
            # own).
            self.text_tokenizer = Tokenizer.from_str(json.dumps(raw))
            self.max_token_chars = max_token_chars(raw)  # text longer than window * this cannot fit (None: unknown)
        except UnusableFileError as exc:
            raise CheckpointError(f"{exc}; re-download the model") from None
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exceptions
            raise CheckpointError(f"{path} cannot be read as a tokenizer ({' '.join(str(exc).split())[:120]}); "
                                  "re-download the model") from None
        self.variant = variant
        self.image_tag = spec.image_tag
        self.num_image_tokens = spec.num_image_tokens
        self.bos_id, self.bos_text = self._special(spec, "bos_token")
        self.eos_id, self.eos_text = self._special(spec, "eos_token")
        image_id = self.tokenizer.token_to_id(spec.image_tag)
        if image_id is None:
            raise CheckpointError(f"{path} has no {spec.image_tag!r} token; "
                                  "this tokenizer is not from a DeepSeek-VL checkpoint")
        self.image_id = image_id

    def _special(self, spec: ModelSpec, name: str) -> tuple[int, str]:
        text = _token_text(spec.tokenizer_config.get(name)) or _token_text(spec.special_tokens_map.get(name))
        token_id = self.tokenizer.token_to_id(text) if text else None
        if token_id is None or text is None:
            raise CheckpointError(f"the tokenizer files define no usable {name}; re-download the model")
        return token_id, text

    # -- rendering ---------------------------------------------------------
    def pieces(self, messages: Sequence, system: str | None) -> list[Piece]:
        """The prompt as text runs, template special tokens and image slots."""
        head, parts, tail = self._layout(messages, system)
        return strip_ends([*head, *(piece for part in parts for piece in part), *tail])

    def _layout(self, messages: Sequence, system: str | None) -> tuple[list[Piece], list[list[Piece]], list[Piece]]:
        """The prompt before its ends are stripped: the system prompt, each message's pieces, the open answer.

        ``head`` and ``tail`` are text only and the same for any suffix of
        ``messages`` that keeps the last one, which is what ``fit`` counts on.
        """
        images = 0

        def content(message) -> list[Piece]:
            nonlocal images
            slots: list[Piece] = []
            for _ in message.images:
                slots.append(ImageSlot(images))
                images += 1
            text = message.text
            # Upstream strips each message's content (tags + text).
            text = text.rstrip() if slots else text.strip()
            return [*slots, text] if text else slots

        if self.variant == "base":
            return [], [content(message) for message in messages], []

        system = DEFAULT_SYSTEM_PROMPT if system is None else system
        head: list[Piece] = [system + USER_SEP] if system else []
        parts: list[list[Piece]] = []
        for message in messages:
            body = content(message)
            role = ROLE_NAMES[message.role]
            if not body:
                parts.append([role + ":"])
                continue
            end = USER_SEP if message.role == "user" else SpecialToken(self.eos_id, self.eos_text)
            parts.append([role + ": ", *body, end])
        tail: list[Piece] = [ROLE_NAMES["assistant"] + ":"] if messages and messages[-1].role == "user" else []
        return head, parts, tail

    def fit(self, messages: Sequence, system: str | None, starts: Sequence[int], budget: int) -> int:
        """The first index into ``starts`` whose ``messages[start:]`` encode to at most ``budget`` ids; else the last.

        The count is exactly ``len(self.encode(self.pieces(messages[start:], system)))``,
        found without encoding the whole rest of the conversation for every
        start (which made long chats quadratic). The encoder splits the prompt
        at each special token and image slot and encodes the text runs between
        them independently, so a run that starts after a candidate's first
        special token or image is the same for every candidate: each is
        encoded once, from the end, and only until those runs alone are over
        ``budget`` (so what is encoded is what is kept, plus one run). A
        candidate then costs one encoding of its first run (the system prompt
        and its first turn, up to the first end-of-sentence token), and none
        when the runs after it alone are already over ``budget``. ``starts``
        are ascending indexes into ``messages``, all at or before the last
        message.
        """
        if not starts:
            raise ValueError("fit() needs at least one start")
        head, parts, tail = self._layout(messages, system)
        flat: list[Piece] = []
        offsets = []
        for part in parts:
            offsets.append(len(flat))
            flat += part
        flat += tail
        size = len(flat)
        hard = [i for i, piece in enumerate(flat) if not isinstance(piece, str)]
        # after[i]: ids of flat[i:] as the end of a prompt, for i at a special token or image slot, or the end.
        # Counted from the newest run back, and only until the window is full: after[] only grows going
        # back, so no candidate that starts earlier can fit, and the runs before are never encoded (a
        # 20 MB transcript took a minute to encode in full for a window of a few thousand tokens).
        after = {size: 0}
        end = size
        for index in reversed(hard):
            if 1 + after[end] > budget:
                break
            text = _text(flat[index + 1 : end])
            after[index] = self._hard_ids(flat[index]) + self._text_ids(text.rstrip() if end == size else text) \
                + after[end]
            end = index
        head_text = _text(head)
        for number, start in enumerate(starts):
            first = offsets[start]
            stop = hard[bisect.bisect_left(hard, first)] if hard and hard[-1] >= first else size
            if stop < end or 1 + after[stop] > budget:
                continue  # the part after its first run is already too long (stop < end: longer than after[end])
            text = (head_text + _text(flat[first:stop])).lstrip()
            if 1 + self._text_ids(text.rstrip() if stop == size else text) + after[stop] <= budget:
                return number
        return len(starts) - 1

    def _text_ids(self, text: str) -> int:
        return len(self.text_tokenizer.encode(_valid_text(text), add_special_tokens=False).ids) if text else 0

    def _hard_ids(self, piece: Piece) -> int:
        return self.num_image_tokens if isinstance(piece, ImageSlot) else 1

    def render(self, pieces: list[Piece]) -> str:
        return "".join(
            p if isinstance(p, str) else self.image_tag if isinstance(p, ImageSlot) else p.text for p in pieces
        )

    def encode(self, pieces: list[Piece]) -> list[int]:
        ids = [self.bos_id]
        text = ""
        for piece in pieces + [None]:
            if isinstance(piece, str):
                text += piece
                continue
            if text:
                ids += self.text_tokenizer.encode(_valid_text(text), add_special_tokens=False).ids
                text = ""
            if isinstance(piece, ImageSlot):
                ids += [self.image_id] * self.num_image_tokens
            elif isinstance(piece, SpecialToken):
                ids.append(piece.token_id)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return (STOP_STRING,) if self.variant == "chat" else ()


def _valid_text(text: str) -> str:
    """Lone surrogates (bytes that were not UTF-8, decoded with surrogateescape) become U+FFFD.

    The front ends make their input valid text; this is the last guard, since the tokenizer refuses
    anything else with a TypeError.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _text(pieces: list[Piece]) -> str:
    """The text of a run of pieces (between two special tokens or image slots all are text)."""
    return "".join(piece for piece in pieces if isinstance(piece, str))


def strip_ends(pieces: list[Piece]) -> list[Piece]:
    """Upstream strips the whole prompt string: trim whitespace at both ends across text runs."""
    pieces = list(pieces)
    for index in range(len(pieces)):
        piece = pieces[index]
        if not isinstance(piece, str):
            break
        pieces[index] = piece = piece.lstrip()
        if piece:
            break
    for index in range(len(pieces) - 1, -1, -1):
        piece = pieces[index]
        if not isinstance(piece, str):
            break
        pieces[index] = piece = piece.rstrip()
        if piece:
            break
    return [p for p in pieces if not (isinstance(p, str) and not p)]
