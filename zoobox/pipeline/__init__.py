"""Running a recipe's stages: the choice of runner and backend (choice), settings and
flags -> a Pipeline (configure), the Pipeline that plans, skips and runs the stages
(pipeline), what a fingerprint covers (inputs), sharded stages (shards), and the CPU
backends' measured speed (speed)."""
