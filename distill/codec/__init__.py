"""The Associative Embedding codec: one object that encodes people into training targets and
decodes network outputs back into people (mmpose's codec idea).

    codec = AECodec.for_keypoints(KeypointSpec.coco())
    heatmaps, indices, _ = codec.encode([joints_128, joints_256], [128, 256])
    people = codec.decode(final_heatmaps, tags)      # list of DecodedImage per image

Encode: Gaussian heatmaps (sigma 2) per output resolution and AE joint indices
`(j*H*W + y*W + x, visible)` for up to `max_people` people (see `targets` for the overflow policy).
Decode: NMS (kernel 5), top-k, detection threshold 0.1, tag threshold 1.0, Hungarian matching in the
official joint order (munkres 1.1.4 tie-breaking), adjust and refine; see `decode`.
Tag maps may be per joint (T = J) or one shared map (T = 1), with tag vectors of any length L.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

from distill.codec import decode as decoding  # keep `distill.codec.decode` the module, not the function
from distill.codec.decode import DecodedImage, DecodeParams
from distill.codec.matching import MatchParams
from distill.codec.targets import OutRes, TargetConfig, encode_targets
from distill.keypoints import KeypointSpec

__all__ = ["AECodec", "DecodedImage", "DecodeParams", "MatchParams", "TargetConfig"]


@dataclass(frozen=True)
class AECodec:
    """Targets in, people out, for one keypoint definition."""

    targets: TargetConfig = field(default_factory=TargetConfig)
    decoding: DecodeParams = field(default_factory=DecodeParams)

    @classmethod
    def for_keypoints(cls, spec: KeypointSpec, tag_per_joint: bool = True, **decode_overrides: object) -> "AECodec":
        """`decode_overrides`: DecodeParams fields; `match={...}` overrides MatchParams fields."""
        match_overrides = dict(decode_overrides.pop("match", None) or {})  # type: ignore[call-overload]
        match = replace(MatchParams(num_joints=spec.num_joints, joint_order=spec.grouping_order), **match_overrides)
        decoding = replace(DecodeParams(match=match), **decode_overrides)  # type: ignore[arg-type]
        return cls(TargetConfig(tag_per_joint=tag_per_joint), decoding)

    @property
    def num_joints(self) -> int:
        return self.decoding.match.num_joints

    def encode(self, joints_per_res: Sequence[np.ndarray], output_sizes: Sequence[OutRes]
               ) -> tuple[list[np.ndarray], list[np.ndarray], int]:
        """Heatmaps (J, H, W) and tag indices (max_people, J, 2) per resolution, and persons dropped."""
        return encode_targets(list(joints_per_res), list(output_sizes), self.targets)

    def decode(self, heatmaps: torch.Tensor | np.ndarray, tags: torch.Tensor | np.ndarray) -> list[DecodedImage]:
        """(B, J, H, W) heatmaps and (B, T, H, W[, L]) tags -> people per image (map pixel coords)."""
        return decoding.decode(heatmaps, tags, self.decoding)
