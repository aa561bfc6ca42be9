"""``python -m tf_fracture``: the ``tf-fracture`` command (see `tf_fracture.command`)."""

import sys

from tf_fracture.command import main

sys.exit(main())
