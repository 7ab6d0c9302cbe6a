"""Settings of the dataset loaders: ``data.loaders.<dataset>.<key>`` in a config or with ``--set``.

One section per dataset, with the published preprocessing as defaults, so ``learec config show`` lists
every default and a changed setting re-keys the prepared-data cache of that dataset only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RetailRocketOptions(_Strict):
    """RetailRocket (Kaggle) ``events.csv`` with the SQN paper's preprocessing (Xin et al., SIGIR 2020)."""

    event_map: dict[str, str] = Field(
        default_factory=lambda: {"view": "click", "addtocart": "purchase"},
        description="raw event -> event type; events not listed are dropped (the SQN code drops transactions)")
    min_session_length: int = Field(3, ge=0, description="visitors (sessions) with fewer events are dropped first")
    min_item_interactions: int = Field(3, ge=0, description="then items with fewer events are dropped (one pass, "
                                       "not a k-core, as in the SQN code)")
    item_properties: bool = Field(True, description="read item_properties_part*.csv + category_tree.csv for item text")


class RC15Options(_Strict):
    """RC15 / YooChoose (RecSys Challenge 2015) with the SQN paper's sampling."""

    min_session_clicks: int = Field(3, ge=0, description="sessions with fewer clicks are dropped before sampling")
    sample_sessions: int = Field(200_000, ge=0, description="sessions sampled at random; 0 = keep all")
    seed: int = Field(0, ge=0, description="seeds the session sample")


class MovieLens1MOptions(_Strict):
    min_rating: float = Field(0.0, ge=0, description="ratings below this are dropped; 0 keeps all (implicit feedback)")


class LastfmOptions(_Strict):
    """Listening logs: one sequence per user, optionally cut into sessions and truncated."""

    sample_users: int = Field(0, ge=0, description="users sampled at random (seeded); 0 = all users")
    seed: int = Field(0, ge=0)
    session_gap_minutes: float = Field(0.0, ge=0, description="start a new sequence after a pause longer than this; "
                                       "0 = one sequence per user")
    max_sequence_length: int = Field(0, ge=0, description="keep each sequence's most recent N plays; 0 = all")


class LFM1bOptions(LastfmOptions):
    sample_users: int = Field(1000, ge=0, description="users sampled at random (seeded); 0 = all 120,322 users "
                              "(about a billion events: too many for one machine's memory)")


class AmazonOptions(_Strict):
    """Amazon Review Data 2018 (Ni, Li & McAuley), one category."""

    category: str = Field("Industrial_and_Scientific", description="file-name spelling, e.g. Video_Games")
    reviews: Literal["auto", "5core", "ratings"] = Field(
        "auto", description="5core: <category>_5.json.gz; ratings: <category>.csv; auto: 5core when present")
    min_rating: float = Field(0.0, ge=0, description="ratings below this are dropped; 0 keeps all")
    drop_duplicates: bool = Field(True, description="drop repeated (user, item, time) rows, which the 2018 files hold")


class LoaderOptions(_Strict):
    max_malformed_fraction: float = Field(
        0.001, ge=0, le=1, description="malformed lines are skipped and reported; more than this share of a "
        "file's lines is an error")
    retailrocket: RetailRocketOptions = RetailRocketOptions()
    rc15: RC15Options = RC15Options()
    movielens_1m: MovieLens1MOptions = MovieLens1MOptions()
    lastfm_1k: LastfmOptions = LastfmOptions()
    lfm_1b: LFM1bOptions = LFM1bOptions()
    amazon_2018: AmazonOptions = AmazonOptions()
