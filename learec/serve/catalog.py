"""The item catalogue of an exported model: original item ids <-> model indices, item text, popularity.

Ids are stored as the strings the raw data held (``learec.data.preprocess`` reads every id as text). When
every id is a plain decimal integer (MovieLens, the synthetic log) the catalogue's ``id_type`` is
``"int"`` and ids are reported as JSON integers; otherwise they are reported as strings. Either way a
lookup accepts the integer ``50`` and the string ``"50"`` alike, so clients need not know which it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from learec.errors import UserError

# Up to 15 digits: such integers survive a round trip through JavaScript's doubles unchanged.
_INT_ID = re.compile(r"-?(0|[1-9][0-9]{0,14})")

ItemId = int | str


def short_repr(value: Any, limit: int = 40) -> str:
    """``repr`` cut to ``limit`` characters: error messages name bad ids without echoing huge inputs."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class UnknownItemsError(UserError):
    """Ids missing from the catalogue; ``unknown`` holds them as given (the API returns them in its 422)."""

    def __init__(self, unknown: list[Any]) -> None:
        shown = ", ".join(short_repr(u) for u in unknown[:20]) + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else "")
        super().__init__(f"unknown item id(s): {shown}",
                         "use the dataset's original item ids (GET /items/{id} or the model's items.json lists "
                         "them), or ask to drop unknown ids (--unknown-items drop / \"unknown_items\": \"drop\")")
        self.unknown = unknown


@dataclass
class ItemCatalog:
    ids: list[str]  # original ids, index = model item index
    text: list[str]
    popularity: np.ndarray  # float64 [n_items]: training interactions per item
    id_type: str = ""  # "int" or "str"; derived from ids when empty
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.ids = [str(i) for i in self.ids]
        self.popularity = np.asarray(self.popularity, dtype=np.float64)
        if not (len(self.ids) == len(self.text) == len(self.popularity)):
            raise UserError(f"inconsistent item catalogue: {len(self.ids)} ids, {len(self.text)} texts, "
                            f"{len(self.popularity)} popularity counts", "export the model again")
        self._index = {item: i for i, item in enumerate(self.ids)}
        if len(self._index) != len(self.ids):
            raise UserError("the item catalogue holds duplicate ids", "export the model again")
        if not self.id_type:
            self.id_type = "int" if all(_INT_ID.fullmatch(i) for i in self.ids) else "str"

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, item: Any) -> int | None:
        """The model index of an original id given as ``str`` or ``int`` (not ``bool``); ``None`` if unknown."""
        if isinstance(item, bool):
            return None
        if isinstance(item, (int, np.integer)):
            item = str(int(item))
        if not isinstance(item, str):
            return None
        return self._index.get(item)

    def public_id(self, index: int) -> ItemId:
        """The original id of ``index`` as clients see it: an ``int`` for integer catalogues, else a ``str``."""
        item = self.ids[index]
        return int(item) if self.id_type == "int" else item

    def encode(self, history: list[Any], drop_unknown: bool = False) -> tuple[list[int], list[Any]]:
        """Model indices of ``history`` (order kept) and the unknown ids; unknown ids raise unless dropped."""
        indices, unknown = [], []
        for item in history:
            index = self.index_of(item)
            if index is None:
                unknown.append(item)
            else:
                indices.append(index)
        if unknown and not drop_unknown:
            raise UnknownItemsError(unknown)
        return indices, unknown

    def describe(self, index: int) -> dict[str, Any]:
        return {"id": self.public_id(index), "text": self.text[index], "popularity": float(self.popularity[index])}

    def to_json(self) -> dict[str, Any]:
        return {"id_type": self.id_type, "ids": self.ids, "text": self.text, "popularity": self.popularity.tolist()}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "ItemCatalog":
        try:
            return cls(obj["ids"], obj["text"], np.asarray(obj["popularity"], dtype=np.float64), obj.get("id_type", ""))
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"malformed item catalogue ({err})", "export the model again") from None
