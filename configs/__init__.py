"""The shipped YAML configs: `teachers/` (architectures), `students/` (architectures), `train/` (run recipes).

A package only so that a non-editable install carries the files (package data) and
`distill.registry` finds them with `importlib.resources`, wherever the code is installed."""
