"""The error type users see, as one line: a bad config, a missing input, a model a method cannot handle.

The entry points print ``str(err)`` of any ``UserError`` on one line and exit 2. Its two kinds let a caller tell a
wrong setting from a model outside a method's reach without reading the message: ThiNet, for one, turns a model it
cannot pair into its own explanation but lets a wrong ``method.*`` value through as it is.
"""


class UserError(Exception):
    """Something the user can fix. The entry point prints ``str(err)`` on one line and exits 2."""


class ConfigError(UserError):
    """A config value that cannot work, named first in the message: ``method.layers: fc9 not a prunable layer...``."""


class RefusedModel(UserError):
    """A model whose structure a method cannot handle: no Linear classifier, no channel group or BatchNorm to prune,
    a grouped conv, a layer the channel trace cannot reach."""
