"""Session schedules: which classes arrive when and which training samples each session may use,
as objects (:mod:`~fscil_bench.schedules.schedule`), as shipped files
(:mod:`~fscil_bench.schedules.files`) and as the standard index lists they are built from
(:mod:`~fscil_bench.schedules.lists`)."""
