"""IAM as AWS evaluates it, for the emulator and the policy checks: see each module."""
