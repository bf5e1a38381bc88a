"""The command-line front ends, one module per command, each an ``add_arguments(parser)`` and a ``run(args)``
(``lossyload-shard`` has its own ``main``): ``lossyload inspect``, ``verify``, ``preview``, ``vae-check``,
``fit-vae``, ``dali-index``, ``make-photos``, ``make-keywords`` (dispatched by :mod:`lossyload.cli`) and
``lossyload-shard`` (:mod:`.shard`). The work itself lives in the library modules they call; the arguments they
share are in :mod:`.args`."""
