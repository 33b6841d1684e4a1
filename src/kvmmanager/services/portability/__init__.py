"""Moving VMs in and out: export, bundles, import planning and policy, templates."""
