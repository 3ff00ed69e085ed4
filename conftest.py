"""edgeready's pytest entry point.

The plugin (options, candidate x target parametrization, reports) is registered through the
`pytest11` entry point of the installed project (`make install`). From a plain checkout without
the install, this file registers it instead.
"""

import sys

if "edgeready.plugin" not in sys.modules:
    pytest_plugins = ["edgeready.plugin"]
