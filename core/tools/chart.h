/* chart.h - one SVG line chart for the measuring tools (recd eval's
 * learning curve, recd sim's CTR by tenth): lines of points spread evenly
 * over the x axis (0..100 %), a y axis from 0 to a round maximum, a legend
 * on the right. */
#ifndef REC_CHART_H
#define REC_CHART_H

#include <stddef.h>

typedef struct rec_chart_line {
    const char *label;   /* in the legend (escaped for XML) */
    char suffix[32];     /* after the label, e.g. " 0.116" */
    const double *y;     /* n values */
    size_t n;
    const char *colour;  /* NULL: the next of the palette */
    int dashed;          /* a reference line: thinner, dashed */
} rec_chart_line;

/* Write the chart to path: 0, or -1 when the file cannot be written. */
int rec_chart_svg(const char *path, const char *title, const char *xlabel,
                  const rec_chart_line *lines, size_t nlines);

#endif
