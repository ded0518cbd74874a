"""Precomputed teacher outputs: a sharded, memory-mappable store, built once, read during training.

Modules, one job each:
    layout     file names, constants, errors, small file helpers (the format below)
    identity   hashes, the header, and the one wording for "this store differs from what was asked"
    frame      the canonical frame an image's maps are stored in, and its affines
    writer     create / resume a store (or one part of it), commit shards atomically, merge parts
    reader     `TeacherStore`: memory-mapped v1 shards, per-image v2 blobs (distill.cache_codec)
    build      run a frozen teacher over a dataset into a store; estimate its size and time
    targets    the teacher's maps for a training sample: online (run the teacher) or cached (warp the store)

Why: running a W32/W48 HigherHRNet teacher next to every student step costs more than the student itself.
Each training image is run through the frozen teacher ONCE, at a canonical frame; at training time
`distill.teacher_cache.targets.CachedTeacher` warps the stored maps with the sample's augmentation.

Canonical frame (per image)
    The official HigherHRNet test resize of the whole image (`distill.geometry.inference_resize`): short side
    -> `input_size`, long side rounded up to a multiple of 64, image centred, the rest zero (black) padding.
    The teacher's outputs are stored at their native resolutions: output k at 1/`stride_k` of that input
    (stride 4: J heatmaps + T tags; stride 2: J heatmaps, for the official W32/W48 and the tiny teacher).

Pixel convention (the one the official *training* targets use, so the one the teacher was trained in)
    A point's coordinate equals its pixel index: pixel (i, j) is the point x = i, y = j (cv2.warpAffine's
    convention). Original image -> input: `frame.affine` (2x3, the `inference_resize` affine). Input ->
    output k: a pure scaling by map_w / input_w (= 1/stride, no half-pixel shift), exactly as the training
    augmentation's per-resolution matrices are scalings of each other (`distill.data.transforms`), i.e.
    `frame.output_affine(k) = affine / stride_k`. (The official *test* code upsamples with
    align_corners=False, which is a different convention; it is not used here.)

Store layout (STORE/)
    header.json                         identity + provenance, written once when the store is created:
                                        teacher name + full config dict, weights (file sha256 and sha256 of the
                                        state_dict tensors, or random_init + seed with a loud note), input size,
                                        dtype, amp, output layout (stride, channels, heatmaps, tags), flip index,
                                        dataset (root, split, number of images, sha256 of the ordered id list),
                                        shard size, creation time, code version.
    index.json                          the commit log (image id -> shard), rewritten atomically after each
                                        shard: {"num_shards": S, "complete": bool, "shards": {"<s>": {
                                        "images": [image ids], "files": [{"name", "bytes", "numel", "sha256"}
                                        per output], "record": {"name", "bytes", "sha256"}, "device",
                                        "committed"}}}. Small (about 0.6 kB per shard), so rewriting it per
                                        commit stays cheap for COCO-sized splits.
    .lock                               flock held by the one process writing the store
    shards/shard-SSSSS.outK.npy         one 1-D little-endian float16 .npy per shard and output: the C*H*W maps
                                        of the shard's images concatenated in plan order (C-order, (C, H, W)).
                                        Open with np.load(mmap_mode="r"); data offset is 64-byte aligned.
    shards/shard-SSSSS.json             the shard's per-image record (image id -> offset, shape, frame):
                                        {"shard": s, "images": {"<image id>": {"shard", "offsets": [per
                                        output, in elements], "shapes": [[C, H, W] per output], "width",
                                        "height", "file_name", "frame": {"center", "scale", "input_size":
                                        [w, h], "affine": 2x3}}}}; read lazily, one shard at a time.

Shard plan: the dataset's image ids in dataset order, cut into runs of `shard_size`; shard s holds ids
[s*N, (s+1)*N). Commit protocol: every .npy of the shard and then its .json record are written to a temp
file, fsynced and renamed (`distill.atomic`), the folder fsynced, then index.json is replaced atomically. A shard exists iff it is
in index.json; a rerun skips committed shards, deletes stray temp files and overwrites shard files that are
not in the index (left by a kill between the rename and the index update). A committed shard whose files
have the wrong size (truncated) is dropped from the index and redone by the next build.
"""
from __future__ import annotations

from distill.teacher_cache.build import BuildSummary, build_store, estimate_store, output_layout_counts
from distill.teacher_cache.frame import CacheFrame, canonical_frame
from distill.teacher_cache.identity import (
    dataset_identity, identity_mismatches, make_header, output_layout, sha256_file, state_dict_sha256,
    weights_identity,
)
from distill.teacher_cache.layout import (
    FORMAT, FORMAT_VERSION, RANDOM_INIT_NOTE, READABLE_VERSIONS, NonFiniteOutputError, StoreError,
    StoreMismatchError, shard_blob_file, shard_file, shard_record,
)
from distill.teacher_cache.reader import TeacherStore
from distill.teacher_cache.writer import StoreWriter, merge_parts, part_index_name

__all__ = [
    "FORMAT", "FORMAT_VERSION", "RANDOM_INIT_NOTE", "READABLE_VERSIONS", "BuildSummary", "CacheFrame",
    "NonFiniteOutputError", "StoreError", "StoreMismatchError", "StoreWriter", "TeacherStore", "build_store",
    "canonical_frame", "dataset_identity", "estimate_store", "identity_mismatches", "make_header", "merge_parts",
    "output_layout", "output_layout_counts", "part_index_name", "sha256_file", "shard_blob_file", "shard_file",
    "shard_record", "state_dict_sha256", "weights_identity",
]
