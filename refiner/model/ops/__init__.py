"""Ops of the model, apart from its modules (as in ``mamba_ssm.ops``): the selective scans."""
