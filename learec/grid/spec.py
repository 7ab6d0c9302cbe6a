"""Grid files as pydantic models: the keys a grid file may hold, checked before any cell is built."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from learec.config import read_yaml
from learec.errors import UserError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariantSpec(_Strict):
    """A named bundle of overrides; ``compare`` names the variant(s) it is also tested against."""

    set: list[str] = Field(default_factory=list, description="overrides, e.g. [objective=snqn, lea.reward=true]")
    compare: list[str] = Field(default_factory=list, description="other variants, e.g. the same method without "
                               "the LE, or [snqn, snqn+popularity]: the method without labels, then with control labels")

    @field_validator("set", "compare", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v

    @field_validator("compare", mode="before")
    @classmethod
    def _one_name(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v  # `compare: snqn` is a list of one


class GridSpec(_Strict):
    """A grid file: a base config, overrides for every cell, and the axes whose product is the grid."""

    base: str = Field(description="a config file, relative to the grid file")
    set: list[str] = Field(default_factory=list, description="overrides for every run")
    out: str | None = Field(None, description="where the runs go (default runs/<grid file name>)")
    axes: dict[str, list[Any]] = Field(description="dotted key -> list of values")
    baseline: dict[str, Any] = Field(default_factory=dict, description="axis values each row is tested against")
    variants: dict[str, VariantSpec] = Field(default_factory=dict, description="name -> overrides (or {set, compare})")
    when: dict[str, dict[str, list[str]]] = Field(
        default_factory=dict, description="axis -> value -> overrides for the cells with that value, e.g. "
        "hyperparameters tuned per backbone: {model.backbone: {gru4rec: [train.lr=0.003]}}")

    @field_validator("set", "baseline", "variants", "when", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any, info: Any) -> Any:
        if v is None:
            return {} if info.field_name in ("baseline", "variants", "when") else []
        return v

    @field_validator("when", mode="before")
    @classmethod
    def _values_are_names(cls, v: Any) -> Any:
        if isinstance(v, dict):  # YAML reads `0.001:` as a number; cells match a value by its text
            return {axis: ({str(value): sets for value, sets in by_value.items()} if isinstance(by_value, dict)
                           else by_value) for axis, by_value in v.items()}
        return v

    @field_validator("axes", mode="before")
    @classmethod
    def _single_values_are_lists(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: (value if isinstance(value, list) else [value]) for k, value in v.items()}
        return v

    @field_validator("variants", mode="before")
    @classmethod
    def _list_is_overrides(cls, v: Any) -> Any:
        if isinstance(v, dict):  # `ce: [objective=ce]` is short for `ce: {set: [objective=ce]}`
            return {str(name): (value if isinstance(value, dict) else {"set": value}) for name, value in v.items()}
        return v

    @model_validator(mode="after")
    def _names_line_up(self) -> "GridSpec":
        for name, variant in self.variants.items():
            for other in variant.compare:
                if other not in self.variants:
                    raise ValueError(f"variant {name!r} is compared with {other!r}, which is not a variant")
                if other == name:
                    raise ValueError(f"variant {name!r} is compared with itself")
            if len(set(variant.compare)) < len(variant.compare):
                raise ValueError(f"variant {name!r} names a variant twice in compare: {variant.compare}")
        if self.variants and "variant" not in self.axes:
            raise ValueError("variants are defined but there is no 'variant' axis (add e.g. `variant: [ce, snqn]` "
                             "to axes)")
        missing = [v for v in self.axes.get("variant", []) if str(v) not in self.variants]
        if missing:
            raise ValueError(f"variant(s) {missing} of the axis are not defined under 'variants'")
        if set(self.baseline) - set(self.axes):
            raise ValueError(f"baseline keys {sorted(set(self.baseline) - set(self.axes))} are not axes")
        for axis, by_value in self.when.items():
            if axis not in self.axes:
                raise ValueError(f"'when' names {axis!r}, which is not an axis")
            unknown = sorted(set(by_value) - {str(value) for value in self.axes[axis]})
            if unknown:
                raise ValueError(f"'when.{axis}' names {unknown}, which are not values of that axis")
            for sets in by_value.values():
                clash = sorted({item.split("=", 1)[0].strip() for item in sets} & set(self.axes))
                if clash:
                    raise ValueError(f"'when.{axis}' sets {clash}, which are axes: the axis value would be "
                                     "overwritten in some cells")
        return self

    @property
    def compare(self) -> dict[str, list[str]]:
        """variant -> the variants it is also tested against, in the file's order."""
        return {name: list(v.compare) for name, v in self.variants.items() if v.compare}


Spec = TypeVar("Spec", bound=BaseModel)


def read_spec(path: str | Path, model: type[Spec], kind: str = "grid file") -> Spec:
    """The file at ``path`` validated as ``model``, or a :class:`UserError` naming each bad key."""
    path = Path(path)
    tree = read_yaml(path)
    try:
        return model.model_validate(tree)
    except ValidationError as err:
        errors = err.errors()
        unknown = [e["loc"] for e in errors if e["type"] == "extra_forbidden"]
        hint = None
        if any(len(loc) == 1 for loc in unknown):
            hint = f"a {kind} holds only the keys {', '.join(model.model_fields)}"
        elif unknown:  # variants.<name>.<key>
            hint = "a variant is a list of overrides or {set: [overrides], compare: another variant or a list}"
        raise UserError(f"Invalid {kind} {path}: " + "; ".join(_describe(e, model) for e in errors), hint) from None


def _describe(error: Any, model: type[BaseModel]) -> str:
    where = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    if error["type"] == "missing":
        field = model.model_fields.get(where)
        return f"'{where}' is missing" + (f" ({field.description})" if field and field.description else "")
    message = error["msg"].removeprefix("Value error, ")
    got = error.get("input")
    return (f"'{where}': " if where else "") + message + ("" if not where or isinstance(got, (dict, list))
                                                          else f" (got {got!r})")
