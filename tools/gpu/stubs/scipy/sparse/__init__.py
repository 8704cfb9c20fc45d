from scipy import unavailable

csr_matrix = unavailable('scipy.sparse.csr_matrix')
