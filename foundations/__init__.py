"""The ground floor: what every other package stands on, importing nothing of the project.

``errors`` (the one user-facing error), ``checks`` (one-line validation, typed config merging, the non-default
fields a hash covers), ``hashing`` (canonical JSON and stage hashes), ``files`` (atomic writes, tensors on disk),
``seeds`` (derived seeds), ``progress`` (bars drawn only on a terminal), ``record`` (the experiment record), ``training`` (TrainConfig and the one training loop).
"""
