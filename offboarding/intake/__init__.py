"""HR events in: the signed `employee.terminated` contract and the route that stores it."""
