"""attnbench: controlled comparisons of attention and focal modulation in vision models.

Layers (each imports only the ones below it):
mechanisms → models → tasks / data / metrics → callbacks → train.
"""

__version__ = "0.1.0"

from attnbench.resolvers import register as _register_resolvers

_register_resolvers()
