"""Flow2Action: flow plans to end-effector actions (learned head and learning-free geometric solver)."""
