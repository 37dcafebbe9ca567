"""The Dramatiq entry point of the workers: ``dramatiq actors.worker [-Q queue ...]``.

Dramatiq's CLI imports the module it is given in every worker process; setting that process up
(metrics mode, logging, the broker, the actors) is this module's only job, done by
:func:`actors.broker.setup_worker`. No other module calls it at import.
"""

from __future__ import annotations

from actors.broker import setup_worker

broker = setup_worker()
