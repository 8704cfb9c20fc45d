from scipy import unavailable

ttest_ind = unavailable('scipy.stats.ttest_ind')
