"""`ragmesh up`: the plan, the launcher and the restarts of the mesh's processes."""
