from scipy import unavailable

maximum_bipartite_matching = unavailable('scipy.sparse.csgraph.maximum_bipartite_matching')
