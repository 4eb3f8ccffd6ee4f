"""zoobox past one host: plans, Slurm batch scripts, Kubernetes manifests, submission.

`plan` says what a cluster run is (recipe, stages, hosts x devices, the shared folder);
`node` is what runs on each host; `slurm` and `k8s` write the scheduler's files;
`submit` hands them to sbatch or kubectl.
"""
