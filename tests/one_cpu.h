/*
 * one_cpu.h - the "run on one CPU" step of the tests of thread-count
 * defaults: pin this process to the first CPU of its affinity mask (what a
 * quota of one CPU gives too, core/cpus.h), and put the mask back after.
 * Check forks each test, so a test that fails between the two leaves only
 * its own process pinned.
 */
#ifndef SID_ONE_CPU_H
#define SID_ONE_CPU_H

#include <check.h>
#include <sched.h>

/* Save the affinity mask in *@all and pin to its first CPU. */
static inline void one_cpu_pin(cpu_set_t *all)
{
	cpu_set_t one;
	int first = -1;

	ck_assert_int_eq(sched_getaffinity(0, sizeof(*all), all), 0);
	for (int i = 0; i < CPU_SETSIZE && first < 0; i++)
		if (CPU_ISSET(i, all))
			first = i;
	ck_assert_int_ge(first, 0);
	CPU_ZERO(&one);
	CPU_SET(first, &one);
	ck_assert_int_eq(sched_setaffinity(0, sizeof(one), &one), 0);
}

static inline void one_cpu_unpin(const cpu_set_t *all)
{
	ck_assert_int_eq(sched_setaffinity(0, sizeof(*all), all), 0);
}

#endif
