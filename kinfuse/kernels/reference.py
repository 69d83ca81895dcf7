"""Pure-torch twins of the Triton ops in this package, with the same signatures.

They are the CPU path, the ground truth the kernel tests compare against, and the readable
statement of what each kernel computes. Shapes are written inline: (N, H) = tokens x hidden.
"""

from __future__ import annotations
