"""*HRNet-style* students: the teachers' HigherHRNet builder with smaller widths / fewer modules.

The config is the teachers' `HigherHRNetConfig` (YAML: `family: hrnet` plus the same fields as
configs/teachers/*.yaml, including the optional stem_channels / layer1_planes / layer1_blocks). The
network is the teacher's `PoseHigherResolutionNet` (same module tree and state_dict layout). Students must keep the two-output AE
contract: one deconv (cat_output true) and with_ae_loss [true, false].
"""
from __future__ import annotations

from students.config import StudentConfigError
from teachers.config import HigherHRNetConfig
from teachers.hrnet import PoseHigherResolutionNet

__all__ = ["HRNetStudent", "build_hrnet_student", "check_hrnet_student_config"]


class HRNetStudent(PoseHigherResolutionNet):
    """The teacher network under a student name (it already has `num_joints` / `tag_per_joint`)."""


def check_hrnet_student_config(cfg: HigherHRNetConfig, source: str = "<config>") -> None:
    """The student output contract: [1/4 with J + T channels, 1/2 with J channels]."""
    dc = cfg.deconv
    if dc.num_deconvs != 1 or tuple(dc.cat_output) != (True,) or dc.kernel_size != (4,):
        raise StudentConfigError(
            f"{source}: field 'deconv' must have num_deconvs 1, kernel_size [4] and cat_output [true] "
            f"(the student contract: one deconv head to 1/2), got num_deconvs {dc.num_deconvs}, "
            f"kernel_size {list(dc.kernel_size)}, cat_output {list(dc.cat_output)}")
    if tuple(cfg.with_ae_loss) != (True, False):
        raise StudentConfigError(
            f"{source}: field 'with_ae_loss' must be [true, false] (tags at 1/4 only), got {list(cfg.with_ae_loss)}")


def build_hrnet_student(cfg: HigherHRNetConfig) -> HRNetStudent:
    if not isinstance(cfg, HigherHRNetConfig):
        raise TypeError(f"expected a HigherHRNetConfig, got {type(cfg).__name__}")
    check_hrnet_student_config(cfg, cfg.name or "<config>")
    return HRNetStudent(cfg)
