"""The Dramatiq entry point of the workers: ``dramatiq actors.worker [-Q queue ...]``.

Dramatiq's CLI imports the module it is given in every worker process; setting that process up
(metrics mode, logging, the broker, the actors) is this module's only job, done by
:func:`actors.broker.setup_worker`. No other module calls it at import.

``python -m actors.worker [dramatiq options]`` runs the same CLI with the workers' modules imported
once before it forks (:mod:`actors.prefork`); run so, this file is ``__main__`` and sets nothing up
itself: the worker processes import it as ``actors.worker``.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from actors.prefork import main

    sys.exit(main(sys.argv[1:]))
else:
    from actors.broker import setup_worker

    broker = setup_worker()
