"""The combined reward served to other engines: ``crs serve-reward`` over HTTP (OpenRLHF's remote reward-model
protocol) and a custom reward function for verl.

:mod:`~crs.serve.served_reward` (an RL subset's reward, loaded once, scoring batches of pairs),
:mod:`~crs.serve.protocol` (OpenRLHF's request and answer, read and written), :mod:`~crs.serve.app` (the aiohttp
server), :mod:`~crs.serve.verl_reward` (verl's ``compute_score``, in process or through the server).
docs/past_one_machine.md says how to point OpenRLHF and verl at it.
"""
